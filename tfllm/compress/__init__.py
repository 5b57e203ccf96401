"""Compression: tfmot pruning, quantization-aware training, knowledge distillation.

Each method is a `TrainingPlugin` on the one training loop; `tfllm-compress`
(`tfllm.compress.run`) turns a trained workdir into a new, ordinary workdir.
"""
