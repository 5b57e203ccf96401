"""Distillation student recipe `gpt_tiny_student` (tfllm/recipes.py).

Usage (docs/compression.md):
  tfllm-compress --workdir=TEACHER --method=distill \
      --student_config=configs/gpt_tiny_student.py --output=OUT
"""

from tfllm.recipes import gpt_tiny_student


def get_config():
    return gpt_tiny_student()
