"""Pipeline parallelism (GPipe over logical CPUs) against one-device references.

Logical CPUs can be configured once per process, so the pipelined runs live
in `pp_checks.py`, started here as one subprocess (one TensorFlow start for
all of them); it builds its own one-device references.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_check_script, run_cli

from tfllm.config import base_config, validate
from tfllm.errors import ConfigError

HERE = Path(__file__).resolve().parent

# The checked GPT: vocab 100, context 16, d 32, FFN 64, 3 blocks split 0-1 | 2.
VOCAB, LENGTH, D, FFN = 100, 16, 32, 64
BLOCK = 4 * (D * D + D) + 2 * (2 * D) + (D * FFN + FFN) + (FFN * D + D)
STAGE_0 = VOCAB * D + LENGTH * D + 2 * BLOCK  # embeddings + blocks 0, 1
STAGE_1 = BLOCK + 2 * D  # block 2 + final LayerNorm


@pytest.fixture(scope="module")
def checks(tmp_path_factory, corpus_file) -> dict:
    workdir = tmp_path_factory.mktemp("pp_train") / "w"
    result = run_check_script(
        HERE / "pp_checks.py",
        str(tmp_path_factory.mktemp("pp_ckpt")),
        corpus_file,
        str(HERE.parent),
        str(workdir),
    )
    result["workdir"] = str(workdir)
    return result


def test_k2_m4_gradients_equal_full_batch_gradients(checks):
    """Four micro-batches through two stages give the one-device full-batch gradients."""
    model = checks["model"]
    assert model["num_grads"][0] == model["num_grads"][1]
    assert model["grads_diff"] < 1e-5
    assert model["loss"][0] == pytest.approx(model["loss"][1], abs=1e-6)


def test_each_variable_and_slot_lives_on_its_stage_device(checks):
    model = checks["model"]
    assert model["block_stage"] == [0, 0, 1]
    placement = model["placement"]
    assert len(placement) == 2 + 3 * 16 + 2  # 2 embeddings, 16 per block, final norm
    for path, where in placement.items():
        assert where["device"] == where["expected"], path
    # Paths are `gpt_<n>/...` (Keras numbers the script's several GPTs).
    device = {path.split("/", 1)[1]: where["device"] for path, where in placement.items()}
    assert device["token_embedding/embeddings"] == "CPU:0"
    assert device["block_1/self_attention/query/kernel"] == "CPU:0"
    assert device["block_2/feedforward_output_dense/kernel"] == "CPU:1"
    assert device["final_norm/gamma"] == "CPU:1"
    assert model["per_device"] == {"CPU:0": STAGE_0, "CPU:1": STAGE_1}
    assert STAGE_0 + STAGE_1 == model["total_params"]
    assert model["slot_count"] == 2 * model["num_grads"][0]  # AdamW m and v
    assert model["slots_on_their_variable"]
    assert "bubble 20%" in model["describe"]


def test_backward_of_each_stage_runs_on_its_device(checks):
    """tf.gradients places each stage's gradient matmuls with its forward ops."""
    backward = checks["model"]["backward_matmuls"]
    assert set(backward) == {"CPU:0", "CPU:1"}
    assert backward["CPU:0"] > backward["CPU:1"] > 0  # two blocks vs one block + head


def test_pipeline_checkpoint_restores_on_one_device(checks):
    model = checks["model"]
    assert model["pp_to_one_weights_diff"] == 0.0
    assert model["pp_to_one_logits_diff"] < 1e-5


def test_training_losses_equal_one_device(checks):
    """K=2 with M=4, and K=2 with M=2 inside grad_accum_steps=2, train like one device."""
    runs = checks["train"]
    one = runs["one"]
    for name in ("pp2_m4", "pp2_m2_a2"):
        run = runs[name]
        assert len(run["history"]) == len(one["history"]) == 2
        for a, b in zip(one["history"], run["history"], strict=True):
            assert abs(a - b) / a < 1e-4, (name, one["history"], run["history"])
        assert abs(one["eval_loss"] - run["eval_loss"]) / one["eval_loss"] < 1e-4


def test_generate_reads_a_pipeline_workdir_on_one_device(checks):
    proc = run_cli(
        "generate", f"--workdir={checks['workdir']}", "--prompt=ROMEO:", "--max_new_tokens=4"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ROMEO:")


def test_more_stages_than_devices_is_one_line(checks):
    message = checks["too_few_devices"]
    assert message.startswith("config.runtime.pipeline_stages: 3 stages need 3 devices")
    assert "2 CPU device(s)" in message and "\n" not in message


def _pipeline_config(**changes) -> object:
    config = base_config()
    config.runtime.pipeline_stages = 2
    config.runtime.num_microbatches = 4
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return config


@pytest.mark.parametrize(
    ("changes", "prefix", "named"),
    [
        (
            {"runtime__pipeline_stages": 5},
            "config.runtime.pipeline_stages: ",
            ["5", "config.model.num_layers=4"],
        ),
        (
            {"train__batch_size": 30},
            "config.runtime.num_microbatches: ",
            ["4", "per-replica batch 30"],
        ),
        (
            {"train__grad_accum_steps": 16},
            "config.runtime.num_microbatches: ",
            ["4", "batch 2", "batch_size=32", "grad_accum_steps=16"],
        ),
        (
            {"model__name": "cnn_classifier", "data__dataset": "sst2"},
            "config.runtime.pipeline_stages: ",
            ["'gpt' only", "cnn_classifier"],
        ),
        ({"runtime__strategy": "mirrored"}, "config.runtime.pipeline_stages: ", ["'mirrored'"]),
        ({"runtime__tensor_parallel": 2}, "config.runtime.pipeline_stages: ", ["tensor_parallel"]),
        ({"runtime__jit_compile": True}, "config.runtime.jit_compile: ", ["pipeline_stages=2"]),
        ({"compress__method": "prune"}, "config.compress.method: ", ["pipeline_stages=2"]),
        (
            {"runtime__pipeline_stages": 1},
            "config.runtime.num_microbatches: ",
            ["4", "grad_accum_steps"],
        ),
    ],
)
def test_bad_pipeline_configs_are_one_line(changes, prefix, named):
    config = _pipeline_config(**changes)
    with pytest.raises(ConfigError) as error:
        validate(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(prefix), message
    for part in named:
        assert part in message, message


def test_a_valid_pipeline_config_passes():
    config = _pipeline_config(train__grad_accum_steps=2, train__batch_size=16)
    validate(config)  # 16 / 2 = 8 rows per accumulation step, 4 micro-batches of 2
