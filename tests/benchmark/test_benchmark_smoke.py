"""tfllm-benchmark's bad flags and its building blocks.

Its run at toy dimensions (`--mode=all --peer=keras_hub`) is docs/benchmarks.md's
first command in tests/docs/test_docs_run.py, where `_check_benchmark` checks
the contract (one JSON line on stdout, the same object in `--output`, every
headline number present and positive), not the speed.
"""

from __future__ import annotations

import json
import math

import keras
import pytest
from conftest import last_stderr_line, run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps=0"], "--steps"),
        (["--decode_prompt_len=200"], "config.model.max_length"),
        (["--compare_precisions=float8"], "--compare_precisions"),
        (["--mode=decode", "--compare_precisions=mixed_bfloat16"], "--compare_precisions"),
    ],
)
def test_benchmark_bad_flags_fail_in_one_line(tmp_path, args, needle):
    output = tmp_path / "bench.json"
    proc = run_cli(
        "benchmark", "--config=configs/bench_gpt_small_cpu.py", f"--output={output}", *args
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert needle in last_stderr_line(proc)
    assert not output.exists()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_measure_peak_gflops_is_positive_and_finite(dtype):
    from tfllm.benchmark.peak import measure_peak_gflops

    gflops = measure_peak_gflops(size=256, warmup=1, repeats=3, dtype=dtype)
    assert math.isfinite(gflops) and gflops > 0


def test_summarize_seconds_reports_median_rate():
    from tfllm.benchmark.stats import summarize_seconds

    stats = summarize_seconds([1.0, 2.0, 4.0], work=8.0, prefix="x")
    assert stats["x_tokens_per_second"] == 4.0
    assert stats["x_time_median_s"] == 2.0
    assert stats["x_samples"] == 3


def test_interleave_alternates_sides_after_warmup_and_rotates_who_goes_first():
    from tfllm.benchmark.timing import interleave

    calls: list[str] = []

    class Side:
        def __init__(self, name: str) -> None:
            self.name = name

        def run_once(self) -> float:
            calls.append(self.name)
            return 1.0

    seconds = interleave([Side("a"), Side("b")], warmup=1, repeats=2, per_repeat=2)
    # warm-up a, b; round 1 a a b b; round 2 starts with b (the order rotates)
    assert calls == ["a", "b", "a", "a", "b", "b", "b", "b", "a", "a"]
    assert seconds == {"a": [1.0] * 4, "b": [1.0] * 4}


TOY = [
    "--config.tokenizer.vocab_size=300",
    "--config.model.max_length=32",
    "--config.model.num_layers=1",
    "--config.model.num_heads=2",
    "--config.model.hidden_dim=32",
    "--config.model.intermediate_dim=64",
    "--config.train.batch_size=2",
    "--steps=2",
    "--warmup=1",
    "--repeats=1",
]


def test_compare_precisions_times_each_side_in_its_own_dtype(tmp_path):
    output = tmp_path / "bench.json"
    proc = run_cli(
        "benchmark",
        "--config=configs/bench_gpt_small_cpu.py",
        "--mode=train",
        "--peer=keras_hub",
        "--compare_precisions=mixed_bfloat16,float32",  # the config's own is dropped
        f"--output={output}",
        *TOY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(output.read_text())
    by_precision = result["train_by_precision"]
    assert list(by_precision) == ["float32", "mixed_bfloat16"]
    for precision, dtype in (("float32", "float32"), ("mixed_bfloat16", "bfloat16")):
        entry = by_precision[precision]
        assert entry["ours"]["compute_dtype"] == entry["keras_hub"]["compute_dtype"] == dtype
        for side in ("ours", "keras_hub"):
            assert entry[side]["train_tokens_per_second"] > 0 and entry[side]["mfu"] > 0
        ratio = (
            entry["ours"]["train_tokens_per_second"] / entry["keras_hub"]["train_tokens_per_second"]
        )
        assert entry["train_speedup_vs_keras_hub"] == pytest.approx(ratio)
        hub32 = by_precision["float32"]["keras_hub"]["train_tokens_per_second"]
        assert entry["train_speedup_vs_keras_hub_float32"] == pytest.approx(
            entry["ours"]["train_tokens_per_second"] / hub32
        )
    # The headline numbers are the config's precision (float32), as without the flag.
    assert (
        result["train_tokens_per_second"]
        == by_precision["float32"]["ours"]["train_tokens_per_second"]
    )
    assert set(result["peak_gflops_by_dtype"]) == {"float32", "bfloat16"}
    assert result["peak_dtype"] == "float32"


def test_float16_train_step_scales_the_loss_as_the_trainer_does():
    """Under mixed_float16 the timed step pays for loss scaling (Keras'
    LossScaleOptimizer, as tfllm.training.optim builds it) and still trains."""
    import numpy as np

    from tfllm.benchmark.runner import dtype_policy
    from tfllm.benchmark.train_bench import TrainBench, build_ours
    from tfllm.config import load_config_file

    config = load_config_file("configs/bench_gpt_small_cpu.py")
    config.tokenizer.vocab_size = 300
    config.model.update(max_length=16, num_layers=1, num_heads=2, hidden_dim=32)
    config.model.intermediate_dim = 64
    config.train.batch_size = 2
    config.runtime.precision = "mixed_float16"
    with dtype_policy("mixed_float16"):
        bench = TrainBench("ours", build_ours(config), config)
        before = [v.numpy().copy() for v in bench.model.trainable_variables]
        for _ in range(3):
            bench.run_once()
    assert isinstance(bench.optimizer, keras.optimizers.LossScaleOptimizer)
    assert bench.model.compute_dtype == "float16"
    # No step overflowed (an overflow halves the scale and skips the update).
    assert float(bench.optimizer.dynamic_scale) == bench.optimizer.initial_scale
    after = bench.model.trainable_variables
    assert all(np.all(np.isfinite(v.numpy())) for v in after)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, after, strict=True))


@pytest.mark.parametrize("side", ["ours", "keras_hub"])
def test_benchmark_optimizer_decays_what_the_trainer_decays(side):
    """Zero gradients: only AdamW's decoupled decay moves weights, and it must
    skip LayerNorm scales/shifts, biases and position embeddings on both sides."""
    import numpy as np
    import tensorflow as tf

    from tfllm.benchmark.train_bench import build_ours, make_optimizer
    from tfllm.config import load_config_file

    config = load_config_file("configs/bench_gpt_small_cpu.py")
    config.tokenizer.vocab_size = 300
    config.model.update(max_length=16, num_layers=1, num_heads=2, hidden_dim=32)
    config.model.intermediate_dim = 64
    config.train.update(learning_rate=0.1, weight_decay=0.5)
    if side == "ours":
        model = build_ours(config)
    else:
        from tfllm.benchmark.peer import build_train_model

        model = build_train_model(config)
    optimizer = make_optimizer(config.train, model)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    optimizer.apply([tf.zeros(v.shape, v.dtype) for v in variables], variables)
    decayed, kept = set(), set()
    for v, old in zip(variables, before, strict=True):
        if np.any(old):  # zero-initialised weights cannot show decay
            (kept if np.allclose(v.numpy(), old) else decayed).add(v.path)
    assert any("position_embedding" in p for p in kept), kept
    assert any("gamma" in p for p in kept) and not any("gamma" in p for p in decayed)
    assert all("kernel" in p or "token_embedding" in p for p in decayed), decayed
    assert any("token_embedding" in p for p in decayed)
