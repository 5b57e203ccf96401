"""Model parallelism: tensor parallel (DTensor) and pipeline parallel (GPipe)."""
