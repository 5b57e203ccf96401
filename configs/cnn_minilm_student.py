"""SST-2 recipe `cnn_minilm_student`: the Kim CNN as the student of a MiniLM classifier;
see tfllm/recipes.py and docs/finetuning.md.

Usage (after training runs/minilm_sst2 with configs/minilm_sst2.py):
  tfllm-compress --workdir=runs/minilm_sst2 --method=distill \\
      --student_config=configs/cnn_minilm_student.py --student_embeddings=teacher \\
      --output=runs/minilm_cnn
"""

from tfllm.recipes import cnn_minilm_student


def get_config():
    return cnn_minilm_student()
