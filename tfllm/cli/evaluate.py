"""tfllm-evaluate: loss and perplexity of a trained LM on a split or a file.

  tfllm-evaluate --workdir=runs/tiny [--split=eval|train] [--data=FILE --format=text]

Updates `W/metrics.json`: `eval_loss`/`perplexity` for the eval split,
`train_split_loss`/`train_split_perplexity` for train, `data_loss`/
`data_perplexity` for --data.
"""

from __future__ import annotations

import os

from absl import flags

from tfllm.cli import common

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_debug_flag()
flags.adopt_module_key_flags(common)  # --helpshort lists --workdir and --debug too
flags.DEFINE_enum("split", "eval", ["eval", "train"], "Which split of the run's data.")
flags.DEFINE_string("data", "", "Evaluate on this file instead (glob or comma list allowed).")
flags.DEFINE_enum("format", "text", ["text", "tsv", "csv", "jsonl"], "Format of --data.")
flags.DEFINE_string("text_field", "text", "Text column/field of --data (tsv/csv/jsonl).")
flags.DEFINE_integer("batch_size", 16, "Windows per batch.")
flags.DEFINE_integer("max_batches", 0, "Stop after this many batches (0 = all).")


def main(argv) -> None:
    del argv
    if FLAGS.batch_size < 1:
        common.fail(f"--batch_size: must be ≥ 1, got {FLAGS.batch_size}")
    if FLAGS.max_batches < 0:
        common.fail(f"--max_batches: must be ≥ 0, got {FLAGS.max_batches}")
    from tfllm.data.corpus import read_documents
    from tfllm.data.lm_data import tokenize_documents
    from tfllm.data.sources import bad_row_policy, lm_token_streams, load_text_splits
    from tfllm.evaluation.metrics import lm_loss_and_perplexity
    from tfllm.inference.loading import load_trained
    from tfllm.utils.io import atomic_write_json, read_json

    trained = load_trained(FLAGS.workdir)
    config, tokenizer = trained.config, trained.tokenizer
    if FLAGS.data:
        policy = bad_row_policy(config.data)  # the run's on_bad_row / max_row_chars
        docs = read_documents(
            FLAGS.data, FLAGS.format, FLAGS.text_field, what="--data", **policy
        ).texts
        ids, prefix = tokenize_documents(tokenizer, docs), "data_"
    else:
        train_ids, eval_ids = lm_token_streams(config, tokenizer, load_text_splits(config.data))
        if FLAGS.split == "eval":
            if eval_ids is None:
                common.fail(
                    "--split=eval: this run has no eval split (config.data.eval_fraction=0)"
                )
            ids, prefix = eval_ids, "eval_"
        else:
            ids, prefix = train_ids, "train_split_"
    result = lm_loss_and_perplexity(
        trained.model, ids, int(config.model.max_length), FLAGS.batch_size, FLAGS.max_batches
    )
    path = os.path.join(FLAGS.workdir, "metrics.json")
    with common.workdir_lock(FLAGS.workdir, config):  # a training run may be updating it
        metrics = read_json(path)
        metrics[f"{prefix}loss"] = result["loss"]
        metrics["perplexity" if prefix == "eval_" else f"{prefix}perplexity"] = result["perplexity"]
        metrics[f"{prefix}tokens"] = result["tokens"]
        atomic_write_json(path, metrics)
    common.print_summary(
        "tfllm-evaluate",
        [
            ("checkpoint", trained.checkpoint),
            ("split", FLAGS.data or FLAGS.split),
            ("tokens", result["tokens"]),
            ("loss", result["loss"]),
            ("perplexity", result["perplexity"]),
            ("metrics", path),
        ],
    )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
