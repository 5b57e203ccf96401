"""Prints the SST-2 results table (docs/results.md) from the runs' metrics.json files.

python scripts/sst2_table.py [RUNS_DIR]
"""

from __future__ import annotations

import json
import os
import sys

RECIPES = (
    ("mlp_sst2", "MLP (bag of embeddings)"),
    ("cnn_sst2", "CNN (Kim 2014, rand)"),
    ("transformer_sst2", "Transformer, from scratch"),
    ("transformer_sst2_finetune", "Transformer, fine-tuned from the GPT"),
)


def main() -> None:
    runs = sys.argv[1] if len(sys.argv) > 1 else "runs"
    print(
        "| model | test accuracy | test macro-F1 | test ROC-AUC | dev accuracy | params "
        "| train time | examples/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, title in RECIPES:
        path = os.path.join(runs, name, "metrics.json")
        if not os.path.isfile(path):
            print(f"| {title} | (not run) | | | | | | |")
            continue
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        test = m.get("test_split", {})
        minutes = m.get("train_wall_seconds", 0.0) / 60
        print(
            f"| {title} | {test.get('accuracy', float('nan')):.2%} "
            f"| {test.get('macro_f1', float('nan')):.4f} | {test.get('roc_auc', float('nan')):.4f} "
            f"| {m['accuracy']:.2%} | {m['num_params'] / 1e6:.2f} M | {minutes:.1f} min "
            f"| {m.get('examples_per_second', 0):,.0f} |"
        )


if __name__ == "__main__":
    main()
