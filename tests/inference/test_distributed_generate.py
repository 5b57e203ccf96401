"""Distributed batch generation and evaluation equal the one-device results, in order.

- in process (default strategy, a random tiny GPT whose greedy text varies by
  prompt): length-bucketed batches equal generating each prompt alone, greedy
  and sampled with a seed per prompt;
- `distributed_checks.py` (a subprocess: 2 logical CPUs must be set before
  TensorFlow starts): one device vs batched vs MirroredStrategy, and the
  eval loss on one device vs mirrored vs a tensor-parallel mesh;
- the commands: `tfllm-generate --input_file` under mirrored, and under
  multi_worker through `tfllm-launch`, write the same JSON lines as one device.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import launch_command, python_module, run_check_script, run_cli, run_command

from tfllm.inference.distributed import BatchGenerator, plan_batches
from tfllm.inference.generate import Generator
from tfllm.inference.prompts import RESULT_FIELDS
from tfllm.models.gpt import GPT

MAX_NEW = 10
# Six prompts, four lengths; a blank line (skipped) and a repeated prompt.
PROMPTS = [
    "ROMEO:",
    "First Citizen:",
    "",
    "O",
    "What say you to this, my lord?",
    "KING",
    "ROMEO:",
]


def test_plan_batches_groups_equal_lengths_in_input_order():
    assert plan_batches([3, 5, 3, 1, 3, 5], 2) == [[0, 2], [4], [1, 5], [3]]
    assert plan_batches([4], 8) == [[0]]


@pytest.fixture(scope="module")
def random_gpt() -> GPT:
    keras.utils.set_random_seed(7)
    gpt = GPT(
        vocab_size=60, max_length=24, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32
    )
    gpt(tf.zeros([1, 24], tf.int32))
    return gpt


def test_batched_equals_one_prompt_at_a_time(random_gpt):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 60, n).tolist() for n in (3, 5, 3, 1, 5, 3, 8)]
    # Graph mode (no XLA) keeps this quick; the XLA loop is what distributed_checks.py runs.
    alone = Generator(random_gpt, use_xla=False)
    batched = BatchGenerator(random_gpt, tf.distribute.get_strategy(), batch_size=2, use_xla=False)
    greedy = [c.ids for c in batched.generate(prompts, 9)]
    expected = [alone.generate(p, 9).tolist() for p in prompts]
    assert greedy == expected
    assert len({tuple(g) for g in greedy}) > 3  # the prompts' texts differ: order is tested
    seeds = [11, 3, 5, 7, 2, 9, 4]
    sampled = batched.generate(prompts, 9, sampler="top_k", top_k=5, seeds=seeds)
    assert [c.ids for c in sampled] == [
        alone.generate(p, 9, sampler="top_k", top_k=5, seed=s).tolist()
        for p, s in zip(prompts, seeds, strict=True)
    ]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def checks(trained_workdir, prompts_file) -> dict:
    return run_check_script(
        Path(__file__).with_name("distributed_checks.py"),
        trained_workdir,
        prompts_file,
        str(MAX_NEW),
    )


@pytest.mark.parametrize("strategy", ["mirrored", "tensor_parallel"])
def test_batch_generation_equals_one_device_in_order(checks, strategy):
    """Mirrored replicas and a tensor-parallel mesh (1 × 2: every matmul split over
    2 logical CPUs, the cache sharded by heads) give one device's tokens exactly."""
    assert len(set(checks["lengths"])) >= 4
    for kind in ("greedy", "sampled"):
        single = checks[f"single_{kind}"]
        assert checks[f"{strategy}_{kind}"] == single, kind
    assert len({tuple(s) for s in checks["single_sampled"]}) > 3


def test_sharded_eval_equals_one_device(checks):
    reference = checks["eval_reference"]
    for name in ("default", "mirrored"):  # the same per-window sums, added in the same order
        assert checks[f"eval_{name}"]["loss"] == checks["eval_default"]["loss"], name
    for name in ("default", "mirrored", "tensor_parallel"):
        result = checks[f"eval_{name}"]
        assert result["tokens"] == checks["eval_default"]["tokens"]
        assert abs(result["loss"] - reference) / reference < 1e-6, (name, result, reference)


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


GENERATE_ARGS = [f"--max_new_tokens={MAX_NEW}", "--sampler=temperature", "--batch_size=3"]


@pytest.fixture(scope="module")
def mirrored_output(trained_workdir, prompts_file, tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("generated") / "out.jsonl"
    proc = run_cli(
        "generate",
        f"--workdir={trained_workdir}",
        f"--input_file={prompts_file}",
        f"--output_file={out}",
        *GENERATE_ARGS,
        "--strategy=mirrored",
        "--logical_cpus=2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out), proc.stdout


def test_generate_file_under_mirrored_writes_one_device_text_in_order(mirrored_output, checks):
    out, stdout = mirrored_output
    rows = _read_jsonl(out)
    prompts = [p for p in PROMPTS if p]
    assert [r["index"] for r in rows] == list(range(len(prompts)))
    assert [r["prompt"] for r in rows] == prompts
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 6, 7]
    assert all(tuple(r) == RESULT_FIELDS for r in rows)
    assert [r["seed"] for r in rows] == list(range(len(prompts)))
    # Prompt i with seed i: exactly what one device generates for it alone.
    assert [r["completion"] for r in rows] == checks["single_sampled_text"]
    assert [r["tokens"] for r in rows] == [len(ids) for ids in checks["single_sampled"]]
    assert "prompts/s" in stdout and "mirrored × 2 replica(s)" in stdout
    assert not [p for p in Path(out).parent.iterdir() if p.name != "out.jsonl"]  # no temp file


def test_generate_file_data_times_tensor_parallel_equals_mirrored(
    trained_workdir, prompts_file, mirrored_output, tmp_path
):
    """`--tensor_parallel=2` on 4 logical CPUs: a 2 (batch) × 2 (model) mesh."""
    out = tmp_path / "tp.jsonl"
    proc = run_cli(
        "generate",
        f"--workdir={trained_workdir}",
        f"--input_file={prompts_file}",
        f"--output_file={out}",
        *GENERATE_ARGS,
        "--tensor_parallel=2",
        "--logical_cpus=4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == Path(mirrored_output[0]).read_bytes()
    assert "tensor parallel 2 (mesh 2 × 2)" in proc.stdout


@pytest.mark.slow
def test_generate_file_under_multi_worker_equals_mirrored(
    trained_workdir, prompts_file, mirrored_output, tmp_path
):
    out = tmp_path / "mw.jsonl"
    generate = python_module(
        "tfllm.cli.generate",
        f"--workdir={trained_workdir}",
        f"--input_file={prompts_file}",
        f"--output_file={out}",
        *GENERATE_ARGS,
        "--strategy=multi_worker",
    )
    proc = run_command(launch_command(2, 0, generate), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert out.read_bytes() == Path(mirrored_output[0]).read_bytes()
    assert "[worker 0]   strategy            multi_worker × 2 replica(s)" in proc.stdout
    assert "[worker 1] ==" not in proc.stdout  # only the chief reports and writes
