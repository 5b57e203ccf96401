"""The custom training loop: learning happens, runs resume, Mirrored == one device."""

import json
from pathlib import Path

import pytest
from conftest import run_check_script, tiny_config

from tfllm.cli.common import setup_runtime
from tfllm.training.run import train_lm


def _train(corpus, workdir, steps):
    config = tiny_config(corpus, steps=steps)
    setup_runtime(config)
    return train_lm(config, str(workdir))


def test_tiny_run_learns_and_writes_every_artifact(corpus_file, tmp_path, capsys):
    workdir = tmp_path / "w"
    metrics = _train(corpus_file, workdir, steps=40)
    history = json.loads((workdir / "history.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"] - 0.5, history
    assert metrics["step"] == 40
    for key in ("loss", "eval_loss", "perplexity", "tokens_per_second", "num_params"):
        assert key in metrics, key
    assert metrics["perplexity"] < 400  # vocab 400: uniform guessing would be 400
    saved = json.loads((workdir / "metrics.json").read_text())
    assert saved["step"] == 40
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 40
    assert (workdir / "tokenizer" / "tokenizer.model").is_file()
    events = list((workdir / "tensorboard").rglob("events.out.tfevents.*"))
    # train/ and eval/ scalars, and the HParams session at the root (tensorboard/)
    assert {p.parent.name for p in events} == {"train", "eval", "tensorboard"}
    assert any(p.name.startswith("ckpt-40") for p in (workdir / "checkpoints").iterdir())

    # Resume: a longer run in the same workdir starts from the saved step.
    capsys.readouterr()
    metrics = _train(corpus_file, workdir, steps=60)
    out = capsys.readouterr().out
    assert "Resuming from step 40" in out
    assert metrics["step"] == 60
    history = json.loads((workdir / "history.json").read_text())["history"]
    assert [h["step"] for h in history] == [10, 20, 30, 40, 50, 60]


def test_tensorboard_has_scalars_text_samples_and_weight_histograms(corpus_file, tmp_path):
    import numpy as np
    import tensorflow as tf

    from tfllm.inference.loading import load_trained

    workdir = tmp_path / "w"
    config = tiny_config(corpus_file, steps=20)
    config.train.weight_histograms = True
    setup_runtime(config)
    train_lm(config, str(workdir))
    tags, histograms = set(), {}
    for event_file in (workdir / "tensorboard").rglob("events.out.tfevents.*"):
        for record in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in record.summary.value:
                tags.add(value.tag)
                if value.tag.startswith("weights/"):
                    tensor = tf.make_ndarray(value.tensor)  # rows of (left, right, count)
                    histograms[(value.tag, record.step)] = tensor
    for tag in ("loss", "learning_rate", "grad_norm", "tokens_per_second", "perplexity",
                "samples"):
        assert tag in tags, tags
    # One histogram per weight per eval (steps 20 = the end), and the last one
    # summarises exactly the weights the checkpoint holds.
    model = load_trained(str(workdir)).model
    assert {step for _, step in histograms} == {20}
    assert len(histograms) == len(model.trainable_variables)
    for variable in model.trainable_variables:
        buckets = histograms[(f"weights/{variable.path.split('/', 1)[1]}", 20)]
        weights = np.asarray(variable)
        assert buckets[:, 2].sum() == weights.size, variable.path
        assert np.isclose(buckets[0, 0], weights.min()), variable.path
        assert np.isclose(buckets[-1, 1], weights.max()), variable.path


def test_changed_model_cannot_resume_old_checkpoints(corpus_file, tmp_path):
    from tfllm.errors import ConfigError

    workdir = tmp_path / "w"
    _train(corpus_file, workdir, steps=10)
    config = tiny_config(corpus_file, steps=20)
    config.model.num_layers = 3
    with pytest.raises(ConfigError, match="config.model.num_layers"):
        train_lm(config, str(workdir))


@pytest.mark.slow
def test_mirrored_two_logical_cpus_matches_one_device(corpus_file):
    tests_dir = Path(__file__).resolve().parents[1]
    result = run_check_script(
        Path(__file__).with_name("mirrored_vs_single.py"), corpus_file, str(tests_dir)
    )
    single, mirrored = result["default"], result["mirrored"]
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    assert len(single["history"]) == len(mirrored["history"]) == 3
    for a, b in zip(single["history"] + [single["eval_loss"]],
                    mirrored["history"] + [mirrored["eval_loss"]], strict=True):
        assert abs(a - b) / abs(a) < 1e-3, (single, mirrored)


def test_mixed_bfloat16_trains_with_float32_logits(corpus_file, tmp_path):
    import keras

    config = tiny_config(corpus_file, steps=20)
    config.runtime.precision = "mixed_bfloat16"
    try:
        setup_runtime(config)
        metrics = train_lm(config, str(tmp_path / "w"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    history = json.loads((tmp_path / "w" / "history.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["perplexity"] < 400
