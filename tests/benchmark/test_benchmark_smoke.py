"""tfllm-benchmark end to end at toy dimensions, plus its building blocks.

The smoke run checks the contract (one JSON line on stdout, the same object
in `--output`, every headline number present and positive), not the speed.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import last_stderr_line, run_cli

SMOKE_ARGS = [
    "--config=configs/bench_gpt_small_cpu.py",
    "--config.model.num_layers=1",
    "--config.model.hidden_dim=32",
    "--config.model.num_heads=2",
    "--config.model.intermediate_dim=64",
    "--config.tokenizer.vocab_size=300",
    "--config.model.max_length=64",
    "--config.train.batch_size=2",
    "--steps=3",
    "--warmup=1",
    "--repeats=1",
    "--mode=all",
    "--peer=keras_hub",
    "--decode_batch=2",
    "--decode_prompt_len=4",
    "--decode_new_tokens=8",
]

POSITIVE_FIELDS = [
    "peak_gflops",
    "peak_gflops_end",
    "train_tokens_per_second",
    "step_time_median_s",
    "step_time_p10_s",
    "step_time_p90_s",
    "flops_per_token",
    "mfu",
    "keras_hub_train_tokens_per_second",
    "keras_hub_mfu",
    "train_speedup_vs_keras_hub",
    "decode_tokens_per_second",
    "decode_seconds_median",
    "keras_hub_decode_tokens_per_second",
    "keras_hub_xla_decode_tokens_per_second",
    "decode_speedup_vs_keras_hub",
    "decode_speedup_vs_keras_hub_xla",
]


@pytest.mark.slow
def test_benchmark_smoke_writes_every_field(tmp_path):
    output = tmp_path / "bench.json"
    proc = run_cli("benchmark", *SMOKE_ARGS, f"--output={output}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-3000:]
    result = json.loads(lines[0])
    assert json.loads(output.read_text()) == result
    for field in POSITIVE_FIELDS:
        value = result[field]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, field
    assert 0 < result["mfu"] < 1
    assert result["step_time_p10_s"] <= result["step_time_median_s"] <= result["step_time_p90_s"]
    assert result["keras_hub_train"]["num_params"] > 0
    assert result["keras_hub_xla_decode"]["jit_compile"] is True
    env = result["environment"]
    for key in ("tensorflow", "keras", "keras_hub", "cpu_model", "cpu_count"):
        assert env[key], key
    assert "intra_op_threads" in env and "inter_op_threads" in env
    assert set(result["targets_met"]) == {
        "mfu_ge_0.5",
        "train_speedup_ge_1.3",
        "decode_speedup_vs_keras_hub_ge_2.0",
        "decode_speedup_vs_keras_hub_xla_ge_2.0",
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps=0"], "--steps"),
        (["--decode_prompt_len=200"], "config.model.max_length"),
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


def test_measure_peak_gflops_is_positive_and_finite():
    from tfllm.benchmark.peak import measure_peak_gflops

    gflops = measure_peak_gflops(size=256, warmup=1, repeats=3)
    assert math.isfinite(gflops) and gflops > 0


def test_summarize_seconds_reports_median_rate():
    from tfllm.benchmark.stats import summarize_seconds

    stats = summarize_seconds([1.0, 2.0, 4.0], work=8.0, prefix="x")
    assert stats["x_tokens_per_second"] == 4.0
    assert stats["x_time_median_s"] == 2.0
    assert stats["x_samples"] == 3


def test_interleave_alternates_sides_after_warmup():
    from tfllm.benchmark.timing import interleave

    calls: list[str] = []

    class Side:
        def __init__(self, name: str) -> None:
            self.name = name

        def run_once(self) -> float:
            calls.append(self.name)
            return 1.0

    seconds = interleave([Side("a"), Side("b")], warmup=1, repeats=2, per_repeat=2)
    assert calls == ["a", "b", "a", "a", "b", "b", "a", "a", "b", "b"]
    assert seconds == {"a": [1.0] * 4, "b": [1.0] * 4}
