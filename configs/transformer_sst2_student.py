"""Distillation student recipe `transformer_sst2_student` (tfllm/recipes.py).

Usage (docs/compression.md):
  tfllm-compress --workdir=TEACHER --method=distill \
      --student_config=configs/transformer_sst2_student.py --output=OUT
"""

from tfllm.recipes import transformer_sst2_student


def get_config():
    return transformer_sst2_student()
