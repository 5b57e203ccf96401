"""Measures `tfllm-import` on the fetched models: wall time, peak RSS, and the baseline.

    ../shared/tools/fetch-pretrained
    python scripts/measure_import.py --output docs/measurements/pretrained_import.json

Each import runs in a fresh process under GNU time (`/usr/bin/time -v`, the
kernel's own peak-RSS count). The baseline is a process that only imports
TensorFlow, keras-hub and tensorflow-text, the floor every tfllm command pays,
so the import's own cost is the difference. The goal (issue 25) compares the
peak with 3x the float32 model size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time


def _timed(command: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {
        "command": " ".join(command),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(int(peak.group(1)) / 1024, 1) if peak else None,
        "stdout": proc.stdout[-2000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
    parser.add_argument("--pretrained", default=default)
    parser.add_argument("--output", default="docs/measurements/pretrained_import.json")
    args = parser.parse_args()
    sources = {
        "smollm2": os.path.join(args.pretrained, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "minilm": os.path.join(args.pretrained, "minilm"),
    }
    float32_mb = {"smollm2": 134_515_008 * 4 / 2**20, "minilm": 22_713_216 * 4 / 2**20}
    baseline = _timed([sys.executable, "-c", "import tensorflow, keras_hub, tensorflow_text"])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in sources.items():
            run = _timed(["tfllm-import", f"--source={source}", f"--workdir={tmp}/{name}"])
            run["float32_model_mb"] = round(float32_mb[name], 1)
            run["peak_over_float32"] = round(run["peak_rss_mb"] / float32_mb[name], 2)
            run["peak_minus_baseline_over_float32"] = round(
                (run["peak_rss_mb"] - baseline["peak_rss_mb"]) / float32_mb[name], 2
            )
            results[name] = run
    record = {
        "what": "tfllm-import wall time and peak RSS (GNU time), one fresh process each",
        "baseline_tf_import": baseline,
        "imports": results,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python scripts/measure_import.py",
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    for name, run in results.items():
        print(
            f"{name}: {run['wall_s']} s, peak {run['peak_rss_mb']} MB "
            f"({run['peak_over_float32']}x float32; baseline {baseline['peak_rss_mb']} MB)"
        )


if __name__ == "__main__":
    main()
