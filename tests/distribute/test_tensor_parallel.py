"""Tensor parallelism (DTensor mesh) against independent one-device references.

Logical CPUs can be configured once per process, so the mesh runs live in
scripts of their own (`tp_checks.py`, `tp_vs_single.py`), started here as
subprocesses; each builds its own one-device reference model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_check_script

from tfllm.config import base_config, validate
from tfllm.errors import ConfigError

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def checks(tmp_path_factory, labelled_files) -> dict:
    files = (labelled_files[split] for split in ("train", "eval", "test"))
    return run_check_script(
        HERE / "tp_checks.py", str(tmp_path_factory.mktemp("tp_ckpt")), *files, str(HERE.parent)
    )


@pytest.mark.parametrize("mesh", ["tp2", "dp2_tp2"])
def test_forward_and_gradients_equal_one_device(checks, mesh):
    result = checks[mesh]
    assert result["logits_diff"] < 1e-5
    assert result["grads_diff"] < 1e-5
    assert result["loss"][0] == pytest.approx(result["loss"][1], abs=1e-5)
    assert result["grad_layouts_kept"]


def test_a_whole_eval_pass_stops_before_the_iterator_end_and_keeps_the_mesh(checks):
    # Pulling a DTensorDataset iterator past its end broke every later op on the
    # mesh (tfllm-train's default eval of the whole split crashed after training).
    result = checks["finite_batches"]
    assert result["batches"] == result["expected"] == 5
    assert result["same_rows"] and result["mesh_usable"]


def test_mesh_shapes(checks):
    assert checks["tp2"]["mesh"] == [1, 2]
    assert checks["dp2_tp2"]["mesh"] == [2, 2]


@pytest.mark.parametrize("mesh", ["tp2", "dp2_tp2"])
def test_each_device_holds_one_nth_of_every_split_kernel(checks, mesh):
    split = checks[mesh]["split"]
    # 2 blocks x (q, k, v kernels + biases, attention output, FFN in kernel + bias, FFN out)
    assert len(split) == 2 * 10
    data_parallel = checks[mesh]["mesh"][0]
    for path, info in split.items():
        local = [list(info["global"]) for _ in info["local"]]
        for shape in local:
            shape[info["axis"]] //= 2
        assert info["local"] == local, path
        assert len(set(info["devices"])) == 2 * data_parallel, path
    kinds = {p.split("/", 2)[-1] for p in split}
    assert "self_attention/attention_output/kernel" in kinds
    assert "feedforward_output_dense/kernel" in kinds


@pytest.mark.parametrize("mesh", ["tp2", "dp2_tp2"])
def test_checkpoints_are_layout_free(checks, mesh):
    """Saved at TP=2, a one-device model gets exactly the trained weights (so the
    same logits as any one-device model with them); saved on one device, the
    mesh model computes the one-device logits."""
    assert checks[mesh]["tp_to_one_weights_diff"] == 0.0
    assert checks[mesh]["tp_to_one_logits_diff"] < 1e-5
    assert checks[mesh]["one_to_tp_logits_diff"] < 1e-5


def test_classifier_forward_gradients_and_checkpoints_equal_one_device(checks):
    """The transformer classifier (padded rows, mean pooling) on the 2 x 2 mesh: its
    blocks split like the GPT's, its head replicated."""
    result = checks["classifier_dp2_tp2"]
    assert result["mesh"] == [2, 2]
    assert result["logits_diff"] < 1e-5
    assert result["grads_diff"] < 1e-5
    assert result["loss"][0] == pytest.approx(result["loss"][1], abs=1e-5)
    assert result["grad_layouts_kept"]
    assert result["tp_to_one_weights_diff"] == 0.0
    assert result["tp_to_one_logits_diff"] < 1e-5
    assert result["one_to_tp_logits_diff"] < 1e-5


def test_classifier_holds_one_nth_of_every_split_kernel(checks):
    split = checks["classifier_dp2_tp2"]["split"]
    assert len(split) == 2 * 10  # the GPT's 10 split variables per block, nothing else
    assert not any(path.split("/")[1] == "head" for path in split)  # the head is replicated
    for path, info in split.items():
        for shape in info["local"]:
            expected = list(info["global"])
            expected[info["axis"]] //= 2
            assert shape == expected, path
        assert len(set(info["devices"])) == 4, path


def test_classifier_init_from_a_host_lm_onto_the_mesh(checks):
    """`train.init_from`: every LM weight lands in the sharded classifier exactly, and
    its logits equal a one-device classifier initialised from the same LM."""
    result = checks["classifier_init_from"]
    assert result["copied"] == result["lm_variables"] > 0
    assert result["backbone_diff"] == 0.0
    assert result["logits_diff"] < 1e-5


def test_classifier_training_equals_one_device_and_evaluates_on_one_device(checks):
    """10 steps of `train_classifier` at tensor_parallel=2 (2 x 2 mesh) against one
    device; the mesh run's checkpoint then evaluated on one device."""
    runs = checks["classifier_training"]
    one, tp = runs["1"], runs["2"]
    assert len(one["history"]) == len(tp["history"]) == 2
    for a, b in zip(one["history"], tp["history"], strict=True):
        assert abs(a - b) / a < 1e-4, (one["history"], tp["history"])
    assert abs(one["eval_loss"] - tp["eval_loss"]) / one["eval_loss"] < 1e-4
    assert tp["one_device_eval_loss"] == pytest.approx(tp["eval_loss"], abs=1e-5)
    assert tp["one_device_accuracy"] == tp["accuracy"] == one["accuracy"]


def test_training_losses_equal_one_device(corpus_file):
    """tensor_parallel=2 on 4 logical CPUs is data x tensor parallel (2 x 2);
    tensor_parallel=4 is pure tensor parallel (1 x 4)."""
    results = run_check_script(
        HERE / "tp_vs_single.py", corpus_file, str(HERE.parent), "4", "2", "4"
    )
    one = results["1"]
    for tp in ("2", "4"):
        run = results[tp]
        assert len(run["history"]) == len(one["history"]) == 2
        for a, b in zip(one["history"], run["history"], strict=True):
            assert abs(a - b) / a < 1e-4, (tp, one["history"], run["history"])
        assert abs(one["eval_loss"] - run["eval_loss"]) / one["eval_loss"] < 1e-4


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [("num_heads", 4, "config.model.num_heads=4"), ("intermediate_dim", 90, "=90")],
)
def test_tensor_parallel_must_divide_heads_and_ffn(key, value, named):
    config = base_config()
    config.model.num_heads = 4
    config.model.intermediate_dim = 96
    config.model[key] = value
    config.runtime.tensor_parallel = 3 if key == "num_heads" else 4
    with pytest.raises(ConfigError) as error:
        validate(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("config.runtime.tensor_parallel: ")
    assert named in message
    assert str(config.runtime.tensor_parallel) in message


@pytest.mark.parametrize(("key", "value"), [("num_heads", 2), ("intermediate_dim", 90)])
def test_tensor_parallel_classifier_must_divide_heads_and_ffn(key, value):
    config = base_config()
    config.data.dataset = "sst2"  # labelled data, as every classifier needs
    config.model.name = "transformer_classifier"
    config.model.num_heads = 4
    config.model.intermediate_dim = 96
    config.runtime.tensor_parallel = 4
    validate(config)  # 4 divides 4 heads and 96 FFN units
    config.model[key] = value
    with pytest.raises(ConfigError) as error:
        validate(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("config.runtime.tensor_parallel: 4 does not divide ")
    assert f"config.model.{key}={value}" in message


def test_tensor_parallel_refuses_models_without_transformer_blocks():
    config = base_config()
    config.data.dataset = "sst2"
    config.model.name = "cnn_classifier"
    config.runtime.tensor_parallel = 2
    with pytest.raises(ConfigError, match="'gpt' and 'transformer_classifier' only"):
        validate(config)


def test_tensor_parallel_needs_default_strategy_and_adam():
    config = base_config()
    config.runtime.tensor_parallel = 2
    validate(config)
    config.runtime.strategy = "mirrored"
    with pytest.raises(ConfigError, match="strategy 'default'"):
        validate(config)
    config.runtime.strategy = "default"
    config.train.optimizer = "sgd"
    with pytest.raises(ConfigError, match="config.train.optimizer"):
        validate(config)
