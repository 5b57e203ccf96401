"""The llama family against Hugging Face transformers (committed reference outputs).

The fixtures (tests/fixtures/pretrained/llama_tiny*, written by
scripts/make_decoder_fixtures.py) are tiny random models with transformers' own
logits and greedy continuations: one in Hugging Face layout (untied head,
grouped-query attention, Llama 3.1 RoPE scaling), one GGUF written the way
llama.cpp writes it (Q/K permuted, Q8_0 matrices) whose reference came from
transformers' own GGUF loader.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfllm.config import base_config
from tfllm.errors import DataError
from tfllm.inference.generate import generate_ids
from tfllm.models import build_model
from tfllm.pretrained import llama
from tfllm.pretrained.gguf_files import permute_rotary, read_gguf, unpermute_rotary
from tfllm.pretrained.hf_files import read_hf_directory, read_safetensors

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained")
HF_DIR = os.path.join(FIXTURES, "llama_tiny")
GGUF_FILE = os.path.join(FIXTURES, "llama_tiny_gguf", "model.gguf")


def _model(source):
    config = base_config()
    for key, value in llama.model_config(source).items():
        config.model[key] = type(config.model[key])(value)
    model = build_model(config.model, llama.vocab_size(source))
    llama.load_into(model, source)
    return model


def _reference(directory: str) -> dict[str, np.ndarray]:
    return dict(np.load(os.path.join(directory, "reference.npz")))


def _assert_logits_close(ours: np.ndarray, ref: np.ndarray) -> None:
    # The bar: within 1e-4 relative to the largest logit, in float32.
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize(
    "read, where", [(read_hf_directory, HF_DIR), (read_gguf, GGUF_FILE)], ids=["hf", "gguf"]
)
def test_logits_and_greedy_match_transformers(read, where):
    ref = _reference(where if os.path.isdir(where) else os.path.dirname(where))
    model = _model(read(where))
    _assert_logits_close(model(tf.constant(ref["ids"])).numpy(), ref["logits"])
    greedy = generate_ids(model, ref["ids"], len(ref["greedy"]))
    assert greedy.numpy()[0].tolist() == ref["greedy"].tolist()


def test_cached_decoding_equals_the_full_forward_pass():
    ref = _reference(HF_DIR)
    model = _model(read_hf_directory(HF_DIR))
    ids = tf.constant(ref["ids"])
    full = model(ids).numpy()
    cache = model.init_cache(1, 32)
    logits, cache = model.call_with_cache(ids[:, :10], cache, 0)
    steps = [logits.numpy()]
    for i in range(10, ids.shape[1]):
        logits, cache = model.call_with_cache(ids[:, i : i + 1], cache, tf.constant(i))
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_the_gguf_fixture_is_permuted_so_skipping_the_unpermute_is_wrong():
    """Without the un-permute the logits move (while argmax may not): the test bites."""
    source = read_gguf(GGUF_FILE)
    heads, kv = source.config["num_attention_heads"], source.config["num_key_value_heads"]
    for name in list(source.tensors):
        count = heads if "q_proj" in name else kv if "k_proj" in name else 0
        if count:
            source.tensors[name] = permute_rotary(source.tensors[name], count)
    ref = _reference(os.path.dirname(GGUF_FILE))
    ours = _model(source)(tf.constant(ref["ids"])).numpy()
    assert np.abs(ours - ref["logits"]).max() > 1e-3 * np.abs(ref["logits"]).max()


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    for heads in (1, 2, 8):
        np.testing.assert_array_equal(unpermute_rotary(permute_rotary(w, heads), heads), w)
        assert not np.array_equal(permute_rotary(w, heads), w)


def test_rms_norm_epsilon_is_read_not_defaulted():
    """keras-hub's converter uses 1e-6 whatever the config says; we read it."""
    source = read_hf_directory(HF_DIR)
    assert llama.model_config(source)["layer_norm_epsilon"] == source.config["rms_norm_eps"]


def _copy_fixture(tmp_path) -> str:
    target = tmp_path / "model"
    shutil.copytree(HF_DIR, target)
    return str(target)


def _rewrite(directory: str, change) -> None:
    from safetensors.numpy import save_file

    path = os.path.join(directory, "model.safetensors")
    tensors = read_safetensors(path)
    change(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
            "'layers.1.mlp.up_proj.weight' is missing",
        ),
        (
            lambda t: t.__setitem__("model.norm.weight", np.ones(7, np.float32)),
            "'norm.weight' has shape (7,)",
        ),
        (
            lambda t: t.__setitem__(
                "model.layers.0.self_attn.q_proj.bias", np.ones(32, np.float32)
            ),
            "'layers.0.self_attn.q_proj.bias' is not used",
        ),
    ],
    ids=["missing", "shape", "unused"],
)
def test_bad_checkpoints_name_the_tensor(tmp_path, change, message):
    directory = _copy_fixture(tmp_path)
    _rewrite(directory, change)
    source = read_hf_directory(directory)
    with pytest.raises(DataError) as info:
        _model(source)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model_type", "mistral", "architecture 'mistral' is not supported"),
        ("hidden_act", "gelu", "'hidden_act' is 'gelu'"),
        ("attention_bias", True, "'attention_bias' is true"),
    ],
)
def test_unsupported_configs_name_the_key(tmp_path, key, value, message):
    directory = _copy_fixture(tmp_path)
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    config[key] = value
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(DataError, match=message):
        _model(read_hf_directory(directory))


def test_truncated_safetensors_is_one_line(tmp_path):
    directory = _copy_fixture(tmp_path)
    path = os.path.join(directory, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    with pytest.raises(DataError, match="truncated"):
        read_hf_directory(directory)


def test_bfloat16_safetensors_read_as_float32(tmp_path):
    """Checkpoints are often bfloat16, which NumPy (and safetensors' NumPy loader) lack."""
    values = np.array([1.0, -2.5, 3.140625], np.float32)  # exact in bfloat16
    payload = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + payload)
    np.testing.assert_array_equal(read_safetensors(str(path))["w"], values)


def test_to_hf_round_trips_through_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    ref = _reference(HF_DIR)
    model = _model(read_hf_directory(HF_DIR))
    config, tensors = llama.to_hf(model)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(out / "model.safetensors"))
    hf, info = transformers.LlamaForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        logits = hf(torch.tensor(ref["ids"].astype(np.int64))).logits.numpy()
    _assert_logits_close(logits, ref["logits"])


LLAMA3_POST_PROCESSOR = {
    "type": "Sequence",
    "processors": [
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False},
        {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [],
            "special_tokens": {},
        },
    ],
}


@pytest.mark.parametrize(
    "post_processor, tokenizer_config, expected",
    [
        (None, {}, False),  # SmolLM2 / the fixture: no BOS
        (LLAMA3_POST_PROCESSOR, {}, True),  # Llama 3's tokenizer.json
        (LLAMA3_POST_PROCESSOR, {"add_bos_token": False}, False),  # the config's word wins
        ({"type": "ByteLevel"}, {}, False),  # GPT-2
    ],
)
def test_a_tokenizer_that_adds_bos_is_detected(tmp_path, post_processor, tokenizer_config,
                                               expected):
    """tfllm does not prepend BOS yet; the importer must know when the source does,
    to say so (tfllm-import's warning line) instead of drifting in silence."""
    from tfllm.pretrained.importer import adds_bos

    source = tmp_path / "src"
    shutil.copytree(os.path.join(FIXTURES, "llama_tiny"), source)
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    tokenizer["post_processor"] = post_processor
    (source / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((source / "tokenizer_config.json").read_text())
    (source / "tokenizer_config.json").write_text(json.dumps({**config, **tokenizer_config}))
    assert adds_bos(read_hf_directory(str(source))) is expected
