"""tfllm-pipeline: the whole journey on bundled data, then report.md.

  tfllm-pipeline --workdir=runs/quickstart [--config=configs/pipeline.py] [--force=export]

Stages: train → evaluate → samples → export → report. Re-running skips the
stages already done (training resumes from its last checkpoint).
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from tfllm.cli import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline", "default_config.py"),
    "Config file (default: the built-in quick recipe, = configs/pipeline.py); override keys "
    "with --config.section.key=value.",
)
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too
flags.DEFINE_list("force", [], "Stages to redo even if done: train, evaluate, samples, export.")


def main(argv) -> None:
    del argv
    from tfllm.pipeline.lm_pipeline import STAGES, run_pipeline

    unknown = [s for s in FLAGS.force if s not in STAGES]
    if unknown:
        common.fail(f"--force: unknown stage(s) {', '.join(unknown)} (stages: {', '.join(STAGES)})")
    if "train" in FLAGS.force:
        common.fail("--force=train: delete the workdir's checkpoints/ to retrain from scratch")
    config = common.resolve_config(FLAGS.config, FLAGS.workdir)
    common.setup_runtime(config)
    with common.workdir_lock(FLAGS.workdir, config):
        report = run_pipeline(config, FLAGS.workdir, set(FLAGS.force))
    common.print_summary("tfllm-pipeline", [("report", report), ("workdir", FLAGS.workdir)])


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
