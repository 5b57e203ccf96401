"""tfllm-pipeline: the whole journey on bundled data, then report.md.

  tfllm-pipeline --workdir=runs/quickstart [--config=configs/pipeline.py] [--force=export]
  tfllm-pipeline --workdir=runs/mlp --config=configs/mlp_sst2.py      # a classifier

The journey follows `config.model.name`:
  language model: train → evaluate (perplexity) → samples → export → tflite → compress → report
  classifier:     train → evaluate (test split) → export → tflite → compress → report
Re-running skips the stages already done (training resumes from its last
checkpoint); --force=STAGE redoes one.
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
flags.DEFINE_list(
    "force",
    [],
    "Stages to redo even if done: evaluate, samples and tflite (LMs), export. (To retrain, "
    "delete "
    "the workdir's checkpoints/.)",
)


def main(argv) -> None:
    del argv
    from tfllm.config import CLASSIFIER_NAMES

    config = common.resolve_config(FLAGS.config, FLAGS.workdir)
    if config.model.name in CLASSIFIER_NAMES:
        from tfllm.pipeline.classifier_pipeline import STAGES
        from tfllm.pipeline.classifier_pipeline import run_classifier_pipeline as run_pipeline

        journey = f"a classifier ({config.model.name})"
    else:
        from tfllm.pipeline.lm_pipeline import STAGES, run_pipeline

        journey = "a language model"
    unknown = [s for s in FLAGS.force if s not in STAGES]
    if unknown:
        common.fail(
            f"--force: unknown stage(s) {', '.join(unknown)} for {journey} "
            f"(stages: {', '.join(STAGES)})"
        )
    if "train" in FLAGS.force:
        common.fail("--force=train: delete the workdir's checkpoints/ to retrain from scratch")
    common.setup_runtime(config)
    with common.workdir_lock(FLAGS.workdir, config):
        report = run_pipeline(config, FLAGS.workdir, set(FLAGS.force))
    common.print_summary("tfllm-pipeline", [("report", report), ("workdir", FLAGS.workdir)])


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
