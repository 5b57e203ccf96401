"""The benchmark's fairness and honesty rules, on fakes (no model, no timing)."""

from __future__ import annotations

from tfllm.benchmark.peak import theoretical_peak
from tfllm.benchmark.runner import _add_mfu, _targets
from tfllm.benchmark.timing import interleave


class _Side:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def run_once(self) -> float:
        self.log.append(self.name)
        return 1.0


def test_no_side_always_runs_first():
    log: list[str] = []
    sides = [_Side(n, log) for n in ("ours", "peer", "peer_xla")]
    interleave(sides, warmup=0, repeats=3, per_repeat=1)
    rounds = [log[i : i + 3] for i in range(0, 9, 3)]
    assert [r[0] for r in rounds] == ["ours", "peer", "peer_xla"]
    assert all(sorted(r) == ["ours", "peer", "peer_xla"] for r in rounds)


def test_mfu_uses_the_higher_peak_and_the_headline_is_the_slower_ratio():
    result = {
        "flops_per_token": 1e6,
        "train_tokens_per_second": 100.0,
        "compute_dtype": "float32",
        "keras_hub_train": {"train_tokens_per_second": 50.0, "compute_dtype": "float32"},
        "decode_speedup_headline": 1.7,
    }
    _add_mfu(result, {"float32": 0.2})  # 0.2 GFLOP/s: the higher of start/end
    assert result["mfu"] == 100.0 * 1e6 / 0.2e9
    assert result["keras_hub_mfu"] == 50.0 * 1e6 / 0.2e9
    assert _targets(result)["decode_speedup_ge_2.0"] is False


def test_theoretical_peak_reads_cores_clock_and_isa(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("cpu MHz\t\t: 2000.000\nflags\t\t: fpu sse2 avx avx2 fma\n")
    peak = theoretical_peak(str(info))
    assert peak is not None and peak["isa"] == "avx2" and peak["flops_per_cycle_assumed"] == 32
    assert peak["gflops"] == round(peak["cores"] * 2.0 * 32, 1)
    assert theoretical_peak(str(tmp_path / "missing")) is None
