"""`tfllm-export --format=hf`: imported and tfllm-trained models out in Hugging Face layout.

The export verifies itself (read back into a fresh model: identical outputs;
where transformers is installed, transformers' outputs within 1e-4 and its
tokenizer's ids equal ours). These tests check the files, the record, and,
with transformers present, load the directory independently once more.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfllm.errors import TfllmError
from tfllm.export.hf import export_hf
from tfllm.inference.loading import load_trained
from tfllm.pretrained.importer import import_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for name, source in {
        "llama": os.path.join(FIXTURES, "llama_tiny"),
        "gpt2": os.path.join(FIXTURES, "gpt2_tiny"),
        "bert": os.path.join(FIXTURES, "bert_tiny"),
    }.items():
        out[name] = str(root / name)
        import_checkpoint(source, out[name])
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_imported_models_export_verified(imported, family, tmp_path):
    trained = load_trained(imported[family])
    target = str(tmp_path / "hf")
    record = export_hf(trained, target)
    assert record["round_trip"].startswith("identical")
    files = set(os.listdir(target))
    assert {"config.json", "model.safetensors", "verification.json"} <= files
    assert set(record["tokenizer_files"]) <= files
    with open(os.path.join(target, "config.json")) as f:
        assert json.load(f)["model_type"] == family
    if isinstance(record["transformers"], dict):  # transformers installed: it was checked
        assert record["transformers"]["max_abs_diff"] <= 1e-4 * record["transformers"]["max_abs"]


def test_tfllm_trained_gpt_exports_as_gpt2_with_its_tokenizer(trained_workdir, tmp_path):
    work = str(tmp_path / "w")
    shutil.copytree(trained_workdir, work)
    trained = load_trained(work)
    record = export_hf(trained)
    target = os.path.join(work, "export", "hf")
    assert record["family"] == "gpt2"
    assert "tokenizer.model" in os.listdir(target)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    hf = transformers.AutoModelForCausalLM.from_pretrained(target).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(target)
    text = "ROMEO: But soft, what light"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == trained.tokenizer.encode(text)
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits.numpy()
    ours = trained.model(tf.constant([ids], tf.int32)).numpy()
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()


def test_a_failed_export_leaves_nothing(imported, tmp_path, monkeypatch):
    trained = load_trained(imported["llama"])
    target = str(tmp_path / "hf")

    def corrupt(model, context_length=0):
        config, tensors = real(model, context_length)
        tensors["model.norm.weight"] = tensors["model.norm.weight"] * 2  # reads back differently
        return config, tensors

    from tfllm.pretrained import llama

    real = llama.to_hf
    monkeypatch.setattr(llama, "to_hf", corrupt)
    with pytest.raises(TfllmError, match="read back differently"):
        export_hf(trained, target)
    assert not os.path.exists(target)


def test_an_exported_gpt_imports_back_with_the_same_logits_and_ids(trained_workdir, tmp_path):
    """tfllm GPT -> GPT-2 layout (SentencePiece tokenizer.model) -> tfllm-import: a round trip."""
    work = str(tmp_path / "w")
    shutil.copytree(trained_workdir, work)
    trained = load_trained(work)
    export_hf(trained)
    back = str(tmp_path / "back")
    import_checkpoint(os.path.join(work, "export", "hf"), back)
    again = load_trained(back)
    text = "ROMEO: But soft, what light\n"
    ids = trained.tokenizer.encode(text)
    assert again.tokenizer.encode(text) == ids
    ours = trained.model(tf.constant([ids], tf.int32)).numpy()
    np.testing.assert_array_equal(again.model(tf.constant([ids], tf.int32)).numpy(), ours)
