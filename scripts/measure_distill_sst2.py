"""Distils a fine-tuned SST-2 teacher (MiniLM) into the CNN student and records accuracy and
LiteRT latency of both.

    python scripts/measure_distill_sst2.py --teacher=runs/minilm_sst2_seed0 \\
        --student=runs/cnn_from_minilm_seed0 --seed=0 \\
        --output=docs/measurements/distill_minilm_cnn_seed0.json

Every stage is the documented command in its own process: `tfllm-compress
--method=distill --student_config=configs/cnn_sst2.py` (the student reads the
teacher's WordPiece ids), `tfllm-evaluate --split=test` on the student (and on
the teacher when its metrics lack the test split), and `tfllm-export
--format=tflite --quantize=Q` on both (each file verified against Keras when it
is written). Latency is what a device serving one sentence at a time sees: the
exported `.tflite` in LiteRT (`LiteRTClassifier`, `--threads` threads), one
test sentence per call, the model alone (encoded row in, probabilities out)
and with the runner's tokenizing, teacher and student interleaved in
`--rounds` rounds over the same `--sentences`; medians per sentence.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from tfllm.utils.io import atomic_write_json
from tfllm.utils.machine import cpu_model


def _run(command: list[str]) -> dict:
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    print(proc.stdout[-2000:], flush=True)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr, flush=True)
        raise SystemExit(f"failed: {' '.join(command)}")
    return {"command": " ".join(command), "wall_s": round(wall, 1), "stdout": proc.stdout[-4000:]}


def _metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def _latency(teacher_dir: str, student_dir: str, texts: list[str], rounds: int, threads: int):
    """Median milliseconds per sentence of each export, interleaved in rounds (batch 1):
    `model` times the LiteRT model on the encoded row (ids -> probabilities, what the
    goal compares); `end_to_end` adds the runner's tokenizing (for a WordPiece export,
    tfllm's TensorFlow tokenizer run eagerly per call)."""
    from tfllm.inference.classifier_tflite_runner import LiteRTClassifier

    runners = {
        "teacher": LiteRTClassifier(teacher_dir, num_threads=threads),
        "student": LiteRTClassifier(student_dir, num_threads=threads),
    }
    rows = {name: runner.encode(texts) for name, runner in runners.items()}
    for runner in runners.values():
        runner.predict(texts[:8], batch_size=1)  # warm-up
    times = {(kind, name): [] for kind in ("model", "end_to_end") for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            for i, text in enumerate(texts):
                started = time.perf_counter()
                runner.predict_proba_ids(rows[name][i : i + 1])
                times["model", name].append(time.perf_counter() - started)
                started = time.perf_counter()
                runner.predict([text], batch_size=1)
                times["end_to_end", name].append(time.perf_counter() - started)
    out = {"calls_per_side": rounds * len(texts)}
    for kind in ("model", "end_to_end"):
        median = {n: statistics.median(times[kind, n]) for n in runners}
        out[kind] = {
            "median_ms_per_sentence": {n: round(v * 1000, 4) for n, v in median.items()},
            "p90_ms_per_sentence": {
                n: round(sorted(times[kind, n])[int(0.9 * len(texts) * rounds)] * 1000, 4)
                for n in runners
            },
            "student_over_teacher": round(median["student"] / median["teacher"], 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="runs/minilm_sst2_seed0")
    parser.add_argument("--student", default="runs/cnn_from_minilm_seed0")
    parser.add_argument("--student_config", default="configs/cnn_sst2.py")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--student_embeddings", default="random", choices=("random", "teacher"))
    parser.add_argument("--augment", type=float, default=0.0, help="tfllm-compress --augment")
    parser.add_argument("--quantize", default="dynamic")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    python = [sys.executable, "-m"]
    load_at_start = os.getloadavg()
    stages = {}
    config = args.student_config
    if args.seed:
        config = os.path.join(tempfile.mkdtemp(prefix="tfllm_student_"), "student_seed.py")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                "import importlib.util\n"
                f"spec = importlib.util.spec_from_file_location('base', {args.student_config!r})\n"
                "base = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(base)\n\n\n"
                "def get_config():\n    config = base.get_config()\n"
                f"    config.train.seed = {args.seed}\n    return config\n"
            )
    done = os.path.isfile(os.path.join(args.student, "metrics.json"))
    if done and "test_split" in _metrics(args.student):
        print(f"{args.student}: distilled and evaluated already; exports and latency only")
    else:
        stages["distill"] = _run(
            [*python, "tfllm.cli.compress", f"--workdir={args.teacher}", "--method=distill",
             f"--student_config={config}", f"--steps={args.steps}", f"--output={args.student}",
             f"--temperature={args.temperature}", f"--alpha={args.alpha}",
             f"--student_embeddings={args.student_embeddings}", f"--augment={args.augment}"]
        )  # fmt: skip
        stages["evaluate_student"] = _run(
            [*python, "tfllm.cli.evaluate", f"--workdir={args.student}", "--split=test"]
        )
    if "test_split" not in _metrics(args.teacher):
        stages["evaluate_teacher"] = _run(
            [*python, "tfllm.cli.evaluate", f"--workdir={args.teacher}", "--split=test"]
        )
    exports = {}
    for name, workdir in (("teacher", args.teacher), ("student", args.student)):
        directory = os.path.join(workdir, "export", f"tflite_{args.quantize}")
        if not os.path.isfile(os.path.join(directory, "verification.json")):
            stages[f"export_{name}"] = _run(
                [*python, "tfllm.cli.export", f"--workdir={workdir}", "--format=tflite",
                 f"--quantize={args.quantize}"]
            )  # fmt: skip
        exports[name] = directory

    from tfllm.data.corpus import bundled_paths, read_documents

    texts = read_documents(bundled_paths("sst2")["test"], "tsv", "sentence").texts
    latency = _latency(
        exports["teacher"], exports["student"], texts[: args.sentences], args.rounds, args.threads
    )
    student, teacher = _metrics(args.student), _metrics(args.teacher)
    sizes = {name: os.path.getsize(os.path.join(d, "model.tflite")) for name, d in exports.items()}
    verification = {
        name: json.load(open(os.path.join(d, "verification.json"), encoding="utf-8"))
        for name, d in exports.items()
    }
    record = {
        "what": "CNN student distilled from a fine-tuned MiniLM teacher on SST-2: test accuracy, "
        "LiteRT latency per sentence (batch 1) and file sizes of both",
        "seed": args.seed,
        "augment": args.augment,
        "student_test_accuracy": student["test_split"]["accuracy"],
        "student_dev_accuracy": student.get("accuracy"),
        "teacher_test_accuracy": teacher["test_split"]["accuracy"],
        "tflite_quantize": args.quantize,
        "tflite_bytes": sizes,
        "tflite_verification_accuracy": {
            n: {"litert": v.get("accuracy"), "keras": v.get("keras_accuracy")}
            for n, v in verification.items()
        },
        "latency": latency,
        "threads": args.threads,
        "stages": stages,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores ({platform.machine()})",
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python scripts/measure_distill_sst2.py " + " ".join(sys.argv[1:]),
    }
    atomic_write_json(args.output, record)
    print(
        f"student test accuracy {record['student_test_accuracy']:.4f} (teacher "
        f"{record['teacher_test_accuracy']:.4f}); LiteRT latency ratio, model "
        f"{latency['model']['student_over_teacher']}, with tokenizing "
        f"{latency['end_to_end']['student_over_teacher']}"
    )


if __name__ == "__main__":
    main()
