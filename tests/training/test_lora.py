"""LoRA (`config.train.lora_rank`): adapters only are trained, B starts at zero, runs
resume, a merged model computes what the adapted one did, bad settings are one line,
and a LoRA fine-tune of an imported llama runs train → generate → export end to end.

Tiny models throughout; the measured comparison with full fine-tuning is
scripts/measure_lora.py (docs/finetuning.md).
"""

from __future__ import annotations

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_config, last_stderr_line, run_cli, tiny_overrides

from tfllm.cli.common import setup_runtime
from tfllm.config import MODEL_NAMES, base_config, load_workdir_config, validate
from tfllm.errors import ConfigError
from tfllm.models import build_model
from tfllm.models.lora import (
    LoraSettings,
    adapter_variables,
    apply_lora,
    lora_layers,
    lora_settings,
    merge_lora,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained")
FAMILIES = [
    name
    for name in (
        "gpt",
        "llama",
        "bert",
        "transformer_classifier",
        "bert_classifier",
        "llama_classifier",
    )
    if name in MODEL_NAMES
]
TARGETS = {  # adapted layers per block for "all": q/k/v/o + the MLP's kernels
    "gpt": 6, "llama": 7, "bert": 6, "transformer_classifier": 6, "bert_classifier": 6,
    "llama_classifier": 7,
}  # fmt: skip


def _tiny(name: str) -> keras.Model:
    config = base_config()
    config.model.update(name=name, num_layers=2, num_heads=2, hidden_dim=32,
                        intermediate_dim=64, max_length=16)  # fmt: skip
    return build_model(config.model, 300, 3)


def _ids() -> tf.Tensor:
    return tf.constant(np.random.RandomState(0).randint(3, 300, (2, 16)), tf.int32)


@pytest.mark.parametrize("name", FAMILIES)
def test_only_adapters_and_head_train_and_step_zero_is_the_base(name):
    keras.utils.set_random_seed(1)
    model = _tiny(name)
    ids = _ids()
    base = model(ids).numpy()
    head = set()
    if hasattr(model, "backbone_layers"):  # a classifier trains its task head in full
        inside = {id(v) for layer in model.backbone_layers() for v in layer.variables}
        head = {v.path for v in model.weights if id(v) not in inside}
    adapted = apply_lora(model, LoraSettings(4, 8.0, ("all",)))
    assert len(adapted) == 2 * TARGETS[name]
    adapters = {v.path for v in adapter_variables(model)}
    assert adapters and all("lora_kernel" in p for p in adapters)
    trainable = {v.path for v in model.trainable_variables}
    assert trainable == adapters | head
    # B is zero: the adapted model starts as the base model, exactly.
    np.testing.assert_array_equal(model(ids).numpy(), base)
    assert all(not v.numpy().any() for v in adapter_variables(model) if "kernel_b" in v.path)
    # The optimizer keeps state for the trainable variables only.
    optimizer = keras.optimizers.AdamW()
    optimizer.build(model.trainable_variables)
    slots = [v for v in optimizer.variables if len(v.shape)]
    assert sum(int(np.prod(v.shape)) for v in slots) == 2 * sum(
        int(np.prod(v.shape)) for v in model.trainable_variables
    )


@pytest.mark.parametrize("factorization", ["paper", "keras"])
@pytest.mark.parametrize("name", FAMILIES)
def test_merged_model_computes_what_the_adapted_one_did(name, factorization):
    keras.utils.set_random_seed(2)
    plain = _tiny(name)
    model = _tiny(name)
    apply_lora(model, LoraSettings(4, 16.0, ("attention", "mlp"), factorization))
    for variable in adapter_variables(model):
        variable.assign(tf.random.normal(variable.shape, stddev=0.2, seed=3))
    ids = _ids()
    adapted = model(ids).numpy()
    assert merge_lora(model) == 2 * TARGETS[name]
    merged = model(ids).numpy()
    assert np.max(np.abs(merged - adapted)) <= 1e-5 * np.max(np.abs(adapted))

    # The merged model is the plain family model again: same weights, names, shapes.
    def layout(m: keras.Model) -> list:
        return [(v.path.split("/", 1)[1], v.shape) for v in m.weights]

    assert layout(model) == layout(plain)
    assert not adapter_variables(model)


@pytest.mark.parametrize("name", FAMILIES)
def test_paper_factorization_is_rank_r_from_inputs_to_outputs(name):
    """Every adapter is the paper's A [inputs, r] · B [r, outputs]: a multi-head
    q/k/v kernel [d, heads, head_dim] gets A [d, r] and B [r, heads, head_dim] (Keras'
    enable_lora would give A [d, heads, r]); so each adapted kernel adds r·(I + O)."""
    model = _tiny(name)
    apply_lora(model, LoraSettings(4, 8.0, ("all",)))
    expected = 0
    for layer in lora_layers(model):
        kernel = tuple(layer._kernel.shape)  # noqa: SLF001
        inputs = 1 if layer.name in ("query", "key", "value") else len(kernel) - 1
        assert tuple(layer.lora_kernel_a.shape) == kernel[:inputs] + (4,), layer.path
        assert tuple(layer.lora_kernel_b.shape) == (4,) + kernel[inputs:], layer.path
        expected += 4 * (int(np.prod(kernel[:inputs])) + int(np.prod(kernel[inputs:])))
    assert sum(int(np.prod(v.shape)) for v in adapter_variables(model)) == expected

    keras_model = _tiny(name)
    apply_lora(keras_model, LoraSettings(4, 8.0, ("query",), "keras"))
    query = lora_layers(keras_model)[0]
    assert tuple(query.lora_kernel_a.shape) == tuple(query._kernel.shape[:-1]) + (4,)  # noqa: SLF001


def test_runs_saved_before_the_factorization_key_load_as_keras(tmp_path):
    config = base_config()
    config.train.lora_rank = 8
    saved = config.to_dict()
    del saved["train"]["lora_factorization"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert load_workdir_config(str(tmp_path)).train.lora_factorization == "keras"
    assert lora_settings(load_workdir_config(str(tmp_path)).train).factorization == "keras"
    assert base_config().train.lora_factorization == "paper"
    # A run without LoRA (an import's config.json, fine-tuned from with --config=) has
    # no adapters to match: today's default.
    saved["train"]["lora_rank"] = 0
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert load_workdir_config(str(tmp_path)).train.lora_factorization == "paper"


def test_bad_settings_are_one_line():
    config = base_config()
    for key, value, words in (
        ("lora_rank", -1, "config.train.lora_rank: must be an integer in [0, 4096]"),
        ("lora_alpha", -2.0, "config.train.lora_alpha: must be a non-negative number"),
        ("lora_targets", "attn", "config.train.lora_targets: must be a comma-separated list"),
    ):
        bad = base_config()
        bad.train[key] = value
        with pytest.raises(ConfigError, match=re.escape(words)) as info:
            validate(bad)
        assert "\n" not in str(info.value)
    config.model.name = "cnn_classifier"
    config.data.dataset = "sst2"
    config.train.lora_rank = 4
    with pytest.raises(ConfigError, match="config.train.lora_rank: 4 needs a transformer"):
        validate(config)
    # A valid name the model does not have (Llama's `gate` on a GPT): one line, by name.
    train = base_config().train
    train.update(lora_rank=4, lora_targets="gate")
    with pytest.raises(ConfigError) as info:
        apply_lora(_tiny("gpt"), lora_settings(train))
    message = str(info.value)
    assert message.startswith("config.train.lora_targets: 'gate' matches no layer of this GPT")
    assert "query" in message and "\n" not in message


def test_bad_targets_on_the_command_line_is_one_line(corpus_file, tmp_path):
    proc = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={tmp_path / 'w'}",
                   *tiny_overrides(corpus_file, 4), "--config.train.lora_rank=4",
                   "--config.train.lora_targets=up")  # fmt: skip
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert "config.train.lora_targets: 'up' matches no layer of this GPT" in line, proc.stderr
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def _weights(workdir: str, step: int, config, vocab_size: int) -> dict[str, np.ndarray]:
    """The model weights checkpoint `step` holds, by path below the model, adapters included.

    Read by restoring into a model (an adapted one for a LoRA run): a variable the
    optimizer also tracks is keyed under `optimizer/` in the file, not `model/`."""
    model = build_model(config.model, vocab_size)
    apply_lora(model, lora_settings(config.train))
    path = os.path.join(workdir, "checkpoints", f"ckpt-{step}")
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    return {v.path.split("/", 1)[1]: v.numpy() for v in model.weights}


def test_lora_run_trains_adapters_only_resumes_and_loads_merged(
    trained_workdir, labelled_files, tmp_path, capsys
):
    from tfllm.inference.loading import load_trained
    from tfllm.training.run import train, train_lm

    base, lora = trained_workdir, str(tmp_path / "lora")  # base: the tiny GPT, 40 steps
    plain = load_workdir_config(base)
    config = load_workdir_config(base)
    config.train.update(num_steps=10, steps_per_loop=10, checkpoint_every=10, eval_every=10)
    config.train.update(init_from=base, lora_rank=4, lora_targets="all", learning_rate=0.01)
    setup_runtime(config)
    metrics = train_lm(config, lora)
    out = capsys.readouterr().out
    assert "LoRA: rank 4, alpha 4 on all; training" in out
    assert metrics["trainable_params"] == metrics["lora_params"] > 0
    assert metrics["trainable_params"] < metrics["total_params"] / 4
    # AdamW: two slots per trainable weight, plus its step counter and learning rate.
    assert metrics["optimizer_state_bytes"] <= 4 * 2 * metrics["trainable_params"] + 64

    # Base weights are unchanged; the adapters (B) have moved off zero.
    vocab = load_trained(base).tokenizer.vocab_size
    before, after = _weights(base, 40, plain, vocab), _weights(lora, 10, config, vocab)
    adapters = [k for k in after if "lora_kernel" in k]
    assert len(adapters) == 2 * 6 * 2 and set(before) == set(after) - set(adapters)
    for name, value in before.items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)
    assert all(after[k].any() for k in adapters if "lora_kernel_b" in k)

    # Resume: the step, the records and the optimizer's state continue.
    config.train.num_steps = 20
    metrics = train_lm(config, lora)
    assert "Resuming from step 10" in capsys.readouterr().out
    history = json.loads(open(os.path.join(lora, "history.json")).read())["history"]
    assert [h["step"] for h in history] == [10, 20] and metrics["step"] == 20
    reader = tf.train.load_checkpoint(os.path.join(lora, "checkpoints", "ckpt-20"))
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 20
    for name, value in before.items():  # still frozen after the resumed steps
        np.testing.assert_array_equal(value, _weights(lora, 20, config, vocab)[name], err_msg=name)

    # Loading merges: the plain GPT, computing what base + adapters compute.
    trained = load_trained(lora)
    assert not adapter_variables(trained.model)
    ids = tf.constant([[5, 6, 7, 8] * 8], tf.int32)
    adapted = build_model(config.model, trained.tokenizer.vocab_size)
    apply_lora(adapted, lora_settings(config.train))
    tf.train.Checkpoint(model=adapted).restore(
        os.path.join(lora, "checkpoints", "ckpt-20")
    ).expect_partial().assert_existing_objects_matched()
    want = adapted(ids).numpy()
    got = trained.model(ids).numpy()
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))

    # A transformer classifier on that LM: adapters plus its head, from the LoRA LM.
    classifier = classifier_config_for(lora, labelled_files)
    classifier.train.update(lora_rank=2)
    metrics = train(classifier, str(tmp_path / "cls"))
    assert metrics["trainable_params"] == metrics["lora_params"] + 32 * 3 + 3


def classifier_config_for(lm: str, files: dict[str, str]):
    """A 10-step transformer classifier on the synthetic topics, from the LM `lm`."""
    config = classifier_config(files, "transformer_classifier", steps=10)
    config.train.update(init_from=lm, steps_per_loop=5, eval_every=10, checkpoint_every=10)
    config.model.max_length = 32
    return config


def test_lora_fine_tune_of_imported_llama_generates_and_exports(corpus_file, tmp_path):
    """The documented command on the llama_tiny import, then generate and a verified
    SavedModel export (adapters merged: greedy text equal to Keras)."""
    from tfllm.pretrained.importer import import_checkpoint

    source, workdir = str(tmp_path / "llama"), str(tmp_path / "ft")
    import_checkpoint(os.path.join(FIXTURES, "llama_tiny"), source)
    args = [f"--config={source}/config.json", f"--workdir={workdir}",
            f"--config.train.init_from={source}", f"--config.data.train_path={corpus_file}",
            "--config.data.format=text", "--config.train.num_steps=10",
            "--config.train.batch_size=4", "--config.train.steps_per_loop=5",
            "--config.train.eval_every=10", "--config.train.checkpoint_every=10",
            "--config.train.eval_batches=2", "--config.train.sample_tokens=0",
            "--config.model.max_length=64", "--config.train.lora_rank=4",
            "--config.train.lora_targets=all", "--config.train.learning_rate=0.01",
            "--config.export.max_new_tokens=6"]  # fmt: skip
    proc = run_cli("train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LoRA: rank 4" in proc.stdout and f"Initialised model weights from {source}" in (
        proc.stdout
    )
    proc = run_cli("generate", f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=6")
    assert proc.returncode == 0 and proc.stdout.startswith("ROMEO:"), proc.stderr[-3000:]
    proc = run_cli("export", f"--workdir={workdir}", "--format=saved_model")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(
        open(os.path.join(workdir, "export", "saved_model", "verification.json")).read()
    )
    assert record["match"] is True, record
