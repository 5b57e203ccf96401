"""keras-hub's GPT-2 at the same dimensions: the speed reference.

Built from the constructors only (no preset, nothing downloaded); weights are
random, which changes nothing about speed. Training uses
`keras_hub.models.GPT2Backbone` plus the tied head `GPT2CausalLM` itself uses
(`token_embedding(x, reverse=True)`), driven by the same step code as ours.
Decoding uses `GPT2CausalLM.generate` on token ids, exactly as a keras-hub
user without a preprocessor would.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import keras_hub
import ml_collections
import numpy as np
import tensorflow as tf


def build_backbone(config: ml_collections.ConfigDict) -> keras_hub.models.GPT2Backbone:
    """A GPT2Backbone with the config's dimensions (dropout as configured)."""
    model = config.model
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=int(config.tokenizer.vocab_size),
        num_layers=int(model.num_layers),
        num_heads=int(model.num_heads),
        hidden_dim=int(model.hidden_dim),
        intermediate_dim=int(model.intermediate_dim),
        dropout=float(model.dropout),
        max_sequence_length=int(model.max_length),
    )


class KerasHubLM(keras.Model):
    """GPT2Backbone + tied LM head: `[B, T]` ids -> float32 logits `[B, T, V]`."""

    def __init__(self, backbone: keras_hub.models.GPT2Backbone, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        inputs = {"token_ids": token_ids, "padding_mask": tf.ones_like(token_ids, tf.bool)}
        x = self.backbone(inputs, training=training)
        logits = self.backbone.token_embedding(x, reverse=True)
        return tf.cast(logits, tf.float32)


def build_train_model(config: ml_collections.ConfigDict) -> KerasHubLM:
    """The keras-hub training model with its variables created."""
    model = KerasHubLM(build_backbone(config))
    model(tf.zeros([1, int(config.model.max_length)], tf.int32))
    return model


class KerasHubDecodeBench:
    """Times `GPT2CausalLM.generate` (greedy, no stop ids) on padded token ids.

    keras-hub generates until the width of `token_ids`, so the inputs are the
    prompt followed by `new_tokens` padding slots (`padding_mask` False).
    `jit_compile=None` keeps keras-hub's own default (on a CPU-only machine
    Keras resolves "auto" to no XLA); `True` forces an XLA generate loop.
    """

    def __init__(
        self,
        name: str,
        config: ml_collections.ConfigDict,
        prompt: np.ndarray,
        new_tokens: int,
        jit_compile: bool | None = None,
    ) -> None:
        self.name = name
        self.lm = keras_hub.models.GPT2CausalLM(backbone=build_backbone(config), preprocessor=None)
        if jit_compile is None:
            self.lm.compile(sampler="greedy")
        else:
            self.lm.compile(sampler="greedy", jit_compile=jit_compile)
        batch, prompt_len = prompt.shape
        token_ids = np.zeros((batch, prompt_len + new_tokens), np.int32)
        token_ids[:, :prompt_len] = prompt
        mask = np.zeros_like(token_ids, dtype=bool)
        mask[:, :prompt_len] = True
        self.inputs = {"token_ids": token_ids, "padding_mask": mask}
        self.prompt_len = prompt_len

    @property
    def jit_compile(self) -> bool:
        """Whether keras-hub compiled its generate loop with XLA."""
        return bool(self.lm.jit_compile)

    def run_once(self) -> float:
        start = time.perf_counter()
        out = self.lm.generate(self.inputs, stop_token_ids=None)
        seconds = time.perf_counter() - start
        expected = self.inputs["token_ids"].shape
        if np.asarray(out["token_ids"]).shape != expected:
            raise AssertionError(f"{self.name}: generate returned no {expected} token_ids")
        return seconds
