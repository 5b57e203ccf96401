"""tfllm-train: learn a tokenizer (if none), train, evaluate periodically, checkpoint.

  tfllm-train --config=configs/gpt_tiny.py --workdir=runs/tiny \
      [--config.data.train_path=corpus.txt --config.data.format=text]
  tfllm-train --config=configs/cnn_sst2.py --workdir=runs/cnn      # a classifier
  tfllm-train --config=runs/smollm2/config.json --workdir=runs/smollm2_ft \
      --config.train.init_from=runs/smollm2 --config.data.train_path=corpus.txt \
      --config.data.format=text                  # fine-tune an imported (or any) LM

Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
common.define_config_flag(
    "Config file (configs/*.py, or a run's config.json: --config=W/config.json starts from "
    "W's model, e.g. to fine-tune with --config.train.init_from=W); override keys with "
    "--config.section.key=value."
)
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too


def main(argv) -> None:
    del argv
    config = common.resolve_config(FLAGS.config, FLAGS.workdir)
    common.setup_runtime(config)
    from tfllm.compress.run import training_plugins
    from tfllm.distribute.strategy import serve_cluster_task
    from tfllm.training.run import train

    if serve_cluster_task(config.runtime):  # a parameter-server cluster's worker or ps
        return

    with common.workdir_lock(FLAGS.workdir, config):
        metrics = train(config, FLAGS.workdir, plugins=training_plugins(config))
    rows = [("workdir", FLAGS.workdir), ("step", metrics.get("step"))]
    keys = ("loss", "eval_loss", "perplexity", "accuracy", "macro_f1", "roc_auc")
    for key in (*keys, "tokens_per_second", "examples_per_second"):
        if key in metrics:
            rows.append((key, metrics[key]))
    rows += [
        ("checkpoints", os.path.join(FLAGS.workdir, "checkpoints")),
        ("tensorboard", f"tensorboard --logdir {os.path.join(FLAGS.workdir, 'tensorboard')}"),
        ("metrics", os.path.join(FLAGS.workdir, "metrics.json")),
    ]
    common.print_summary("tfllm-train", rows)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
