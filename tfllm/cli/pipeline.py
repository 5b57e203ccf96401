"""tfllm-pipeline: the whole journey on bundled data, then report.md.

  tfllm-pipeline --workdir=runs/quickstart                  # the journey, quick profile
  tfllm-pipeline --workdir=runs/full --profile=full         # the headline numbers
  tfllm-pipeline --workdir=runs/pretrained --profile=pretrained   # published models
  tfllm-pipeline --workdir=runs/mlp --config=configs/mlp_sst2.py   # one model

The default config (= configs/pipeline.py) is the journey (docs/pipeline.md):
GPT pretraining → samples → SavedModel + LiteRT → pruning; a transformer
classifier fine-tuned from the GPT and CNN/MLP baselines on SST-2 → test
scores → exports → pruning and distillation; tfllm-benchmark against
keras-hub; W/report.md + report.html. `--profile=pretrained` is the journey on
published models (tfllm.pipeline.pretrained_journey): all-MiniLM-L6-v2 and
SmolLM2-135M-Instruct from --pretrained_dir, imported, fine-tuned, distilled,
exported, reported. A single-model config runs that
model's own journey:
  language model: train → evaluate (perplexity) → samples → export → tflite → compress → report
  classifier:     train → evaluate (test split) → export → tflite → compress → report
Re-running skips a stage only when its output was made from the config and
checkpoint it would use now, and re-runs it otherwise, saying why (training
resumes from its last checkpoint); --force=STAGE redoes one.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import flags
from ml_collections import config_flags

from tfllm.cli import common

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "pipeline", "default_config.py"
)
# The pretrained journey has other parts (minilm, smollm2, ...) than the default
# one, and config_flags applies --config.* overrides to the default file while
# this module loads, before --profile is parsed: so the profile is read from the
# command line here, and the default file loads at that profile.
_ARGS = sys.argv[1:]
if any(a in ("--profile=pretrained", "-profile=pretrained") for a in _ARGS) or any(
    a in ("--profile", "-profile") and b == "pretrained"
    for a, b in zip(_ARGS, _ARGS[1:], strict=False)
):
    _DEFAULT_CONFIG += ":pretrained"
try:
    config_flags.DEFINE_config_file(
        "config",
        _DEFAULT_CONFIG,
        "Config file (default: the built-in journey, = configs/pipeline.py); override keys "
        "with --config.section.key=value (journey parts: --config.lm.train.num_steps=300).",
    )
except (AttributeError, KeyError) as e:
    # The default file is parsed, overrides included, as this module loads, before
    # common.run can turn an unknown key into one line.
    common.fail_unknown_config_key(e)
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too
flags.DEFINE_enum(
    "profile",
    None,
    ["quick", "full", "pretrained"],
    "Journey size: quick (about 10 minutes on 2 CPU cores, the default) or full (about an "
    "hour, the numbers in docs/results.md); pretrained: the journey on published models "
    "(about 30 minutes; reads --pretrained_dir). Only for the journey config.",
)
flags.DEFINE_string(
    "pretrained_dir",
    None,
    "With --profile=pretrained: the directory ../shared/tools/fetch-pretrained wrote "
    "(default: $TFLLM_PRETRAINED or ~/.cache/tfllm-pretrained).",
)
flags.DEFINE_list(
    "force",
    [],
    "Stages to redo even if done, e.g. export, or lm.export / transformer.tflite / distil "
    "in the journey (stage names as the progress lines print them). Training stages are "
    "redone by deleting the part's checkpoints/.",
)


def main(argv) -> None:
    del argv
    from tfllm.pipeline.journey import is_journey_config
    from tfllm.pipeline.pretrained_journey import is_pretrained_journey as is_pretrained_config

    if FLAGS.pretrained_dir is not None and FLAGS.profile != "pretrained":
        common.fail("--pretrained_dir: only with --profile=pretrained")
    if FLAGS.profile == "pretrained" or is_pretrained_config(FLAGS.config):
        _run_pretrained_journey()
        return
    if is_journey_config(FLAGS.config):
        _run_journey()
        return
    if FLAGS.profile:
        common.fail(
            "--profile: only for the journey config (configs/pipeline.py); a single-model "
            "config sets its own sizes"
        )
    from tfllm.config import CLASSIFIER_NAMES

    config = common.resolve_config(FLAGS.config, FLAGS.workdir)
    if config.model.name in CLASSIFIER_NAMES:
        from tfllm.pipeline.classifier_pipeline import STAGES
        from tfllm.pipeline.classifier_pipeline import run_classifier_pipeline as run_pipeline

        journey = f"a classifier ({config.model.name})"
    else:
        from tfllm.pipeline.lm_pipeline import STAGES, run_pipeline

        journey = "a language model"
    _check_force(STAGES, journey, training=("train",))
    common.setup_runtime(config)
    with common.workdir_lock(FLAGS.workdir, config):
        report = run_pipeline(config, FLAGS.workdir, set(FLAGS.force))
    common.print_summary("tfllm-pipeline", [("report", report), ("workdir", FLAGS.workdir)])


def _check_force(stages, journey: str, training: tuple[str, ...]) -> None:
    unknown = [s for s in FLAGS.force if s not in stages]
    if unknown:
        common.fail(
            f"--force: unknown stage(s) {', '.join(unknown)} for {journey} "
            f"(stages: {', '.join(stages)})"
        )
    retrain = [s for s in FLAGS.force if s in training]
    if retrain:
        common.fail(
            f"--force={retrain[0]}: delete that part's checkpoints/ to retrain from scratch"
        )


def _journey_config():
    """The journey config at the requested profile, with the command's overrides."""
    config = FLAGS.config
    if not FLAGS.profile or FLAGS.profile == config.get("profile"):
        return config
    # What --config=FILE:PROFILE does: the file's get_config(PROFILE).
    path = config_flags.get_config_filename(FLAGS["config"])
    spec = importlib.util.spec_from_file_location("tfllm_pipeline_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(FLAGS.profile)
    for key, value in config_flags.get_override_values(FLAGS["config"]).items():
        target = config
        *parents, leaf = key.split(".")
        for name in parents:
            target = target[name]
        target[leaf] = value
    return config


def _run_journey() -> None:
    from tfllm.pipeline.journey import STAGES, part_configs, run_journey

    journey = _journey_config()
    _check_force(STAGES, "the journey", training=tuple(s for s in STAGES if s.endswith(".train")))
    configs = part_configs(journey, FLAGS.workdir)  # every part validated before any work
    steps = ", ".join(f"{part} {c.train.num_steps}" for part, c in configs.items())
    print(
        f"Journey, profile {journey.profile}: training steps {steps}, "
        f"distilled student {journey.distil.student.train.num_steps}",
        flush=True,
    )
    common.setup_runtime(configs["lm"])
    with common.workdir_lock(FLAGS.workdir):
        report = run_journey(journey, FLAGS.workdir, set(FLAGS.force))
    common.print_summary(
        "tfllm-pipeline",
        [
            ("profile", journey.profile),
            ("report", report),
            ("html", report[: -len(".md")] + ".html"),
            ("results", os.path.join(FLAGS.workdir, "results.json")),
            ("workdir", FLAGS.workdir),
        ],
    )


def _run_pretrained_journey() -> None:
    from tfllm.pipeline.journey import is_journey_config
    from tfllm.pipeline.pretrained_journey import (
        STAGES,
        is_pretrained_journey,
        part_configs,
        run_pretrained_journey,
    )

    if FLAGS.profile == "pretrained" and is_journey_config(FLAGS.config):
        journey = _journey_config()  # configs/pipeline.py given: its pretrained profile
    else:
        journey = FLAGS.config
    if not is_pretrained_journey(journey):
        common.fail(
            "--profile=pretrained: only for the journey config (configs/pipeline.py, or "
            "--config=configs/pipeline.py:pretrained)"
        )
    if FLAGS.pretrained_dir is not None:
        journey.pretrained_dir = FLAGS.pretrained_dir
    _check_force(STAGES, "the pretrained journey", training=("minilm.train", "smollm2.train"))
    print(
        f"Journey, profile pretrained: MiniLM {journey.minilm.train.num_steps} steps, "
        f"distilled student {journey.distil.student.train.num_steps}, "
        f"SmolLM2 LoRA {journey.smollm2.train.num_steps}",
        flush=True,
    )
    common.setup_runtime(part_configs(journey, FLAGS.workdir)["minilm"])
    with common.workdir_lock(FLAGS.workdir):
        report = run_pretrained_journey(journey, FLAGS.workdir, set(FLAGS.force))
    common.print_summary(
        "tfllm-pipeline",
        [
            ("profile", "pretrained"),
            ("report", report),
            ("html", report[: -len(".md")] + ".html"),
            ("results", os.path.join(FLAGS.workdir, "results.json")),
            ("workdir", FLAGS.workdir),
        ],
    )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
