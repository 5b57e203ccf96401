#!/usr/bin/env bash
# Reproduces the SST-2 table in docs/results.md: trains every classifier recipe,
# scores it on test.tsv (= GLUE dev) and exports a verified SavedModel.
#
#   bash scripts/sst2_classifiers.sh [RUNS_DIR]        # default: runs/
#
# The fine-tuned transformer needs the GPT pretrained first, so the LM goes
# before it. Each step resumes if interrupted (re-run the script).
set -euo pipefail
runs="${1:-runs}"
for name in mlp_sst2 cnn_sst2 transformer_sst2 gpt_sst2_pretrain transformer_sst2_finetune; do
  extra=()
  if [[ "$name" == transformer_sst2_finetune ]]; then
    extra=(--config.train.init_from="$runs/gpt_sst2_pretrain")
  fi
  tfllm-train --config="configs/$name.py" --workdir="$runs/$name" "${extra[@]}"
  if [[ "$name" != gpt_sst2_pretrain ]]; then
    tfllm-evaluate --workdir="$runs/$name" --split=test --batch_size=64
    tfllm-export --workdir="$runs/$name" --format=saved_model
  fi
done
python scripts/sst2_table.py "$runs"
