"""The gpt2 family against Hugging Face transformers, and tfllm's own GPT exported as GPT-2."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfllm.config import base_config
from tfllm.errors import DataError
from tfllm.inference.generate import generate_ids
from tfllm.models import GPT, build_model
from tfllm.pretrained import gpt2
from tfllm.pretrained.hf_files import read_hf_directory

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained", "gpt2_tiny")


def _model(source, **overrides):
    config = base_config()
    for key, value in {**gpt2.model_config(source), **overrides}.items():
        config.model[key] = type(config.model[key])(value)
    model = build_model(config.model, gpt2.vocab_size(source))
    gpt2.load_into(model, source)
    return model


def _max_rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_logits_and_greedy_match_transformers():
    ref = dict(np.load(os.path.join(FIXTURE, "reference.npz")))
    model = _model(read_hf_directory(FIXTURE))
    assert model.activation == "gelu_approximate"
    assert _max_rel(model(tf.constant(ref["ids"])).numpy(), ref["logits"]) <= 1e-4
    greedy = generate_ids(model, ref["ids"], len(ref["greedy"]))
    assert greedy.numpy()[0].tolist() == ref["greedy"].tolist()


def test_exact_gelu_would_not_match():
    """GPT-2 was trained with tanh GELU: reading `activation_function` matters."""
    ref = dict(np.load(os.path.join(FIXTURE, "reference.npz")))
    model = _model(read_hf_directory(FIXTURE), activation="gelu")
    assert _max_rel(model(tf.constant(ref["ids"])).numpy(), ref["logits"]) > 1e-4


def test_unknown_activation_names_the_key(tmp_path):
    source = read_hf_directory(FIXTURE)
    source.config["activation_function"] = "swish"
    with pytest.raises(DataError, match="'activation_function' is 'swish'"):
        gpt2.model_config(source)


def test_tfllm_gpt_exports_as_gpt2_that_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    tf.random.set_seed(0)
    model = GPT(
        vocab_size=97, max_length=32, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64
    )
    ids = np.random.default_rng(0).integers(0, 97, size=(2, 20)).astype(np.int32)
    ours = model(tf.constant(ids)).numpy()  # exact GELU: exported as activation "gelu"
    config, tensors = gpt2.to_hf(model)
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        theirs = hf(torch.tensor(ids.astype(np.int64))).logits.numpy()
    assert _max_rel(ours, theirs) <= 1e-4
