"""BertEncoder in the shared harness (tests/harness.py); its numerics against
transformers are in tests/pretrained/test_bert.py."""

from __future__ import annotations

import numpy as np
from harness import ModelTests

from tfllm.models.bert import BertEncoder

TINY = dict(
    vocab_size=60, max_length=16, num_layers=2, num_heads=4, hidden_dim=32,
    intermediate_dim=48, layer_norm_epsilon=1e-7, activation="gelu_approximate",
)  # fmt: skip


class TestBertHarness(ModelTests):
    model_class = BertEncoder
    init_kwargs = TINY
    input_data = np.random.default_rng(0).integers(1, 60, size=(2, 16)).astype(np.int32)
    expected_output_shape = (2, 16, 32)
