"""Every shell block in README.md and docs/*.md runs, with tiny settings, so the docs cannot rot.

Each page's blocks run in order through `bash -euo pipefail` in a sandbox
directory that looks like a checkout (configs/, scripts/, examples/ linked in,
the data files the docs name written out). `bin/` wrappers put first on PATH
route every `tfllm-*` command to a fork server (tests/docs/forkserver.py) that
adds the tiny settings of tests/docs/tiny.py and runs the real command module;
`tensorboard` is replaced by a check that the event files it would show exist,
`pip install` by a no-op (the suite runs in the installed checkout), and
`../shared/tools/fetch-pretrained` by a stub that lays out the tiny pretrained
fixtures under the real models' file names (docs/pretrained.md and
docs/finetuning.md run on them).

Pages run in groups (`GROUPS`), one sandbox and one test each, so a
page reads the runs an earlier page of its group made and a command line that
already ran in the group is not repeated. The LM guides follow the journey
pages, which make the runs they read (`runs/shakespeare`, `runs/tiny`,
`runs/cnn_sst2`); a group that reads a run it does not make would get it from
a per-worker cache built by the documented producing command (`PROVIDERS`).
The two groups are the suite's longest tests: tests/conftest.py starts them
first, each on its own xdist worker (the `longest` marker). Blocks that need
real infrastructure are skipped, each with its reason (`SKIPPED`); their
commands are still checked statically by test_docs_commands.py.

After a page's shell blocks, its ```python blocks run too (as `python
block.py` in the sandbox), so the snippets users paste cannot rot either; one
that needs a package tfllm does not install (`PYTHON_NEEDS`) is skipped when
it is absent.

Besides exit statuses, the run checks what some commands made: the journey
(`_check_journey`), the one-LM pipeline and its resume (`_check_lm_pipeline`,
once tests/pipeline/test_lm_pipeline.py's own run) and `tfllm-benchmark`'s
output contract (`_check_benchmark`, once tests/benchmark's smoke run).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import JOURNEY_STEPS, shakespeare_head
from test_docs_commands import _BLOCK, COMMANDS, DOCS, ROOT
from tiny import STEPS, rewrite

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
# Pages run in this order, each group in one sandbox (a later page reads the
# runs an earlier one made, and a command that already ran is not repeated).
GROUPS = {
    "journey-and-lm-guides": [
        "README.md",
        "docs/getting-started.md",
        "docs/pipeline.md",
        "docs/results.md",
        "docs/training.md",
        "docs/configuration.md",
        "docs/data.md",
        "docs/generation.md",
        "docs/export.md",
        "docs/edge.md",
        "docs/benchmarks.md",
        "docs/reliability.md",
    ],
    "classifiers-compression-distributed": [
        "docs/classification.md",
        "docs/compression.md",
        "docs/distributed.md",
    ],
    "pretrained": ["docs/pretrained.md"],
    "finetuning": ["docs/finetuning.md"],
    "serving": ["docs/serving.md"],
}
# Where a group reads a run it does not make: the documented command that makes it.
PROVIDERS = {
    "runs/shakespeare": "tfllm-pipeline --config=configs/shakespeare.py --workdir=runs/shakespeare",
    "runs/tiny": "tfllm-train --config=configs/gpt_tiny.py --workdir=runs/tiny",
    "runs/cnn_sst2": "tfllm-train --config=configs/cnn_sst2.py --workdir=runs/cnn_sst2",
}
# Journey runs the docs start in fresh workdirs: `runs/full` is seeded with the
# finished tiny journey (its profile changes only step counts, which the tiny
# settings replace, so it resumes instead of repeating the same tiny stages);
# `runs/j` runs fresh, since its changed cnn dropout would (rightly) refuse to
# reuse another run's checkpoints.
SEEDED = {"runs/full": "runs/quickstart"}
SKIPPED = {
    "python -m pytest": "the test suite itself",
    "gs://": "needs a GCS bucket and GPUs or a TPU",
    "TF_CONFIG=": "needs other hosts",
    "tfllm-serve": "a long-lived server (its Python block below starts one; every request of "
    "docs/serving.md is sent to a real server by tests/serving/test_serve.py)",
    "curl ": "talks to a running tfllm-serve (tests/serving/test_serve.py sends the same requests)",
}
# ```python blocks that need what the suite does not install.
PYTHON_NEEDS = {"import transformers": "transformers", "import httpx": "httpx"}
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_RUN = re.compile(r"\bruns/[\w.-]+")
_PRODUCES = re.compile(
    r"tfllm-(?:train|pipeline)\b[^\n]*?--workdir=(runs/[\w.-]+)|--output=(runs/[\w.-]+)"
)


def test_every_page_with_shell_blocks_is_in_a_group():
    pages = {str(d.relative_to(ROOT)) for d in DOCS if _BLOCK.search(d.read_text())}
    grouped = [page for group in GROUPS.values() for page in group]
    assert len(grouped) == len(set(grouped))
    assert pages <= set(grouped), pages - set(grouped)


@pytest.fixture(scope="session")
def forkserver(tmp_path_factory):
    """One fork server per test worker (TF imported once for all the docs commands)."""
    sock = str(tmp_path_factory.mktemp("fs") / "s")
    log = open(Path(sock).with_suffix(".log"), "w")  # noqa: SIM115 (kept open while it runs)
    # This checkout's tfllm first, whichever checkout `pip install -e` points at.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "forkserver.py"), sock], stdout=log, stderr=log, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=path),
    )
    deadline = time.time() + 120
    while not os.path.exists(sock):
        assert server.poll() is None, Path(log.name).read_text()[-3000:]
        assert time.time() < deadline, "the docs fork server did not start"
        time.sleep(0.2)
    yield sock
    server.terminate()
    server.wait(timeout=30)
    log.close()


class Sandbox:
    """A directory that looks like a checkout to the documented commands."""

    def __init__(self, root: Path, forkserver: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for name in ("configs", "scripts", "examples"):
            (root / name).symlink_to(ROOT / name)
        self._write_bin(root / "bin")
        self._write_data()
        self._write_fetch_pretrained_stub()
        self.env = dict(
            os.environ,
            TFLLM_PRETRAINED=str(root / "pretrained"),
            PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
            TFLLM_FORKSERVER=forkserver,
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
        )

    def _write_bin(self, bin_dir: Path) -> None:
        bin_dir.mkdir()
        head = f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
        scripts = {
            name: head + f"import forkserver\nforkserver.client({module!r})\n"
            for name, module in COMMANDS.items()
        }
        scripts["tfllm-launch"] = head + "from tfllm.launch import main\nsys.exit(main())\n"
        scripts["tensorboard"] = head + "from stubs import tensorboard\ntensorboard()\n"
        scripts["pip"] = head + "from stubs import pip\npip()\n"
        for name, text in scripts.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)

    def _write_fetch_pretrained_stub(self) -> None:
        """`../shared/tools/fetch-pretrained` as the docs call it, giving the tiny fixtures
        under the real files' names (a GGUF llama with a ChatML template, a BERT
        directory): the documented commands run on them in seconds, offline."""
        tools = self.root.parent / "shared" / "tools"
        tools.mkdir(parents=True, exist_ok=True)
        fixtures = ROOT / "tests" / "fixtures" / "pretrained"
        script = tools / "fetch-pretrained"
        gguf = "$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        script.write_text(
            "#!/usr/bin/env bash\nset -euo pipefail\n"
            'dest=${1:-$TFLLM_PRETRAINED}\nmkdir -p "$dest/smollm2" "$dest/minilm"\n'
            f'cp {fixtures}/llama_tiny_gguf/model.gguf "{gguf}"\n'
            f'cp {fixtures}/bert_tiny/* "$dest/minilm/"\necho "$dest"\n'
        )
        script.chmod(0o755)

    def _write_data(self) -> None:
        """The files the docs tell users to bring (corpus.txt, tickets_*.jsonl, ...)."""
        text = shakespeare_head(30_000)
        (self.root / "corpus.txt").write_text(text)
        (self.root / "other.txt").write_text(shakespeare_head(60_000)[30_000:])
        queues = ["billing", "login", "shipping"]
        lines = [line for line in text.splitlines() if len(line.split()) > 3]
        for name, rows in (("tickets_train.jsonl", 600), ("tickets_dev.jsonl", 120)):
            with open(self.root / name, "w") as f:
                for i in range(rows):
                    queue = queues[i % 3]
                    body = f"{lines[i % len(lines)]} (about {queue})"
                    f.write(json.dumps(dict(body=body, queue=queue)) + "\n")

    def run_python(self, code: str, name: str, timeout: int = 300) -> subprocess.CompletedProcess:
        """A page's ```python block as `python block.py` in the sandbox (through the
        fork server: TensorFlow is imported already)."""
        path = self.root / f"{name}.py"
        path.write_text(code)
        launcher = f"import sys; sys.path.insert(0, {str(HERE)!r}); import forkserver; "
        return subprocess.run(
            [sys.executable, "-c", launcher + f"forkserver.client_file({str(path)!r})"],
            cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def run(self, script: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def provided(tmp_path_factory, forkserver):
    """Runs made by their documented command once per worker, copied into sandboxes."""
    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("provided")

    def provide(run: str, sandbox: Sandbox) -> None:
        if run not in cache:
            maker = Sandbox(root / run.replace("/", "_"), forkserver)
            proc = maker.run(PROVIDERS[run])
            assert proc.returncode == 0, _failure(f"providing {run}", PROVIDERS[run], proc)
            cache[run] = maker.root / run
        shutil.copytree(cache[run], sandbox.root / run, symlinks=True)

    return provide


def _failure(where: str, block: str, proc: subprocess.CompletedProcess) -> str:
    return (
        f"{where} failed (exit {proc.returncode}):\n{block.strip()}\n"
        f"--- stdout (tail)\n{proc.stdout[-2500:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}"
    )


def _skip_reason(block: str) -> str | None:
    return next((why for needle, why in SKIPPED.items() if needle in block), None)


def _prepare(block: str, sandbox: Sandbox, provide) -> None:
    """Puts in place the runs `block` reads but does not make itself."""
    made = {a or b for a, b in _PRODUCES.findall(block)}
    for run in dict.fromkeys(_RUN.findall(block)):
        if (sandbox.root / run).exists() or run in made and run not in SEEDED:
            continue
        if run in SEEDED:
            shutil.copytree(sandbox.root / SEEDED[run], sandbox.root / run, symlinks=True)
        elif run in PROVIDERS:
            provide(run, sandbox)


def _commands(block: str, root: Path) -> list[str]:
    """The block's command lines, continuations joined, comments and spacing dropped,
    each as it runs (`_as_run`)."""
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    return [
        _as_run(" ".join(line.split("#", 1)[0].split()), root)
        for line in lines
        if line.split("#", 1)[0].strip()
    ]


def _as_run(command: str, root: Path) -> str:
    """A `tfllm-*` line as the fork server runs it: tiny settings appended, the last
    value of a flag winning (absl). So two lines that differ only in a value the
    tiny settings replace (`--repeats=5` and `--repeats=7`) are one command."""
    try:
        name, *argv = shlex.split(command)
    except ValueError:
        return command
    if name not in COMMANDS or not all(a.startswith("--") and "=" in a for a in argv):
        return command
    try:
        argv = rewrite(COMMANDS[name], argv, str(root))
    except Exception:  # noqa: BLE001 - the block reports it when it runs
        return command
    flags = dict(a.split("=", 1) for a in argv)
    return " ".join([name, *(f"{k}={v}" for k, v in sorted(flags.items()))])


def _check_journey(sandbox: Sandbox, outputs: dict[str, str]) -> None:
    """What README's first command and docs/pipeline.md's --force made, in detail."""
    run = sandbox.root / "runs" / "quickstart"
    report = (run / "report.md").read_text()
    for section in (
        "## Language model",
        "## Text classifiers (SST-2)",
        "## Compression",
        "## Speed",
        "## Stages",
        "## Reproduce",
        "## Environment",
    ):
        assert section in report, section
    for png in ("lm_curve.png", "classifier_curves.png", "pareto.png", "latency.png"):
        assert (run / png).stat().st_size > 1000, png
        assert f"]({png})" in report
    page = (run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 5

    results = json.loads((run / "results.json").read_text())
    assert results["profile"] == "quick"
    assert results["language_model"]["saved_model_match"] is True
    assert results["language_model"]["perplexity"] > 1
    assert len(results["classifiers"]) == 5  # three families, the pruned and the distilled
    for name, row in results["classifiers"].items():
        assert 0.0 <= row["test_accuracy"] <= 1.0, name
        assert row["litert_bytes"] > 0 and row["litert_ms"] > 0, name
    for family in ("transformer", "cnn", "mlp"):
        metrics = json.loads((run / "classifiers" / family / "metrics.json").read_text())
        assert metrics["test_split"]["num_examples"] == 872  # bundled SST-2 test.tsv
        assert metrics["step"] == JOURNEY_STEPS
    student = json.loads((run / "distil" / "compression.json").read_text())
    assert student["method"] == "distill" and student["num_params"] < student["teacher_params"]
    config = json.loads((run / "classifiers" / "transformer" / "config.json").read_text())
    assert config["train"]["init_from"] == "runs/quickstart/lm"  # the journey's own LM
    bench = results["benchmark"]
    assert bench["train_tokens_per_second"] > 0 and bench["train_speedup_vs_keras_hub"] > 0

    forced = outputs["docs/pipeline.md block 2"]  # --force=cnn.tflite,distil
    assert forced.count("already done, skipping") == 19, forced[-3000:]
    assert "cnn.tflite: done in" in forced and "distil: done in" in forced


def _check_lm_pipeline(sandbox: Sandbox, stdout: str) -> None:
    """`tfllm-pipeline --config=configs/shakespeare.py`: every stage of the one-LM
    pipeline, its report, and (this block runs it again) resume."""
    run = sandbox.root / "runs" / "shakespeare"
    report = (run / "report.md").read_text()
    for section in (
        "## Language model",
        "## Samples",
        "## Export",
        "## Compression",
        "## Reproduce",
        "## Environment",
        "loss_curve.png",
    ):
        assert section in report, section
    assert (run / "loss_curve.png").stat().st_size > 1000
    samples = json.loads((run / "samples.json").read_text())["samples"]
    assert len(samples) == 6 and all(s["completion"] for s in samples)  # 3 prompts × 2 rules
    verification = json.loads((run / "export/saved_model/verification.json").read_text())
    assert verification["match"] is True
    edge = json.loads((run / "export/tflite_dynamic/verification.json").read_text())
    assert edge["quantize"] == "dynamic" and edge["perplexity_increase"] < 0.05
    assert "export/tflite_dynamic/model.tflite" in report
    page = (run / "report.html").read_text()  # self-contained: the plot is inlined
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert 'src="data:image/png;base64,' in page and 'src="loss_curve.png"' not in page
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == STEPS and metrics["full_eval_perplexity"] > 1
    pruned = json.loads((run / "compressed/prune50/compression.json").read_text())
    assert pruned["method"] == "prune" and pruned["sparsity"] >= 0.49
    assert (run / "compressed/prune50/export/tflite_dynamic/model.tflite").is_file()
    for stage in ("train", "evaluate", "samples", "export", "tflite", "compress"):
        assert f"{stage}: already done, skipping" in stdout, (stage, stdout[-3000:])


BENCHMARK_FIELDS = [
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
    "decode_speedup_headline",
    "peak_gflops_start",
]


def _check_benchmark(sandbox: Sandbox, stdout: str) -> None:
    """`tfllm-benchmark --mode=all --peer=keras_hub`'s contract (not its speed): one JSON
    line on stdout, the same object in --output, every headline number positive."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout[-3000:]
    result = json.loads(lines[0])
    assert json.loads((sandbox.root / "benchmarks.json").read_text()) == result  # --output
    for field in BENCHMARK_FIELDS:
        value = result[field]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, field
    assert 0 < result["mfu"] < 1
    assert result["peak_dtype"] == "float32"  # the run's compute dtype: MFU's denominator
    assert result["step_time_p10_s"] <= result["step_time_median_s"] <= result["step_time_p90_s"]
    assert result["keras_hub_train"]["num_params"] > 0
    assert result["keras_hub_xla_decode"]["jit_compile"] is True
    env = result["environment"]
    for key in ("tensorflow", "keras", "keras_hub", "cpu_model", "cpu_count"):
        assert env[key], key
    assert "intra_op_threads" in env and "inter_op_threads" in env
    assert isinstance(env["cpu_native_bfloat16"], bool)
    assert set(result["targets_met"]) == {
        "mfu_ge_0.5",
        "train_speedup_ge_1.3",
        "decode_speedup_ge_2.0",
    }
    # The conservative figures: the slower of the two decode ratios, MFU against
    # the higher of the peaks measured before and after the run.
    assert result["decode_speedup_headline"] == min(
        result["decode_speedup_vs_keras_hub"], result["decode_speedup_vs_keras_hub_xla"]
    )
    assert result["peak_gflops"] == max(result["peak_gflops_start"], result["peak_gflops_end"])


# What a block made, checked right after it (later blocks may change those runs).
CHECKS = {
    "docs/pipeline.md block 4": _check_lm_pipeline,
    "docs/benchmarks.md block 1": _check_benchmark,
}


@pytest.mark.longest
@pytest.mark.parametrize("group", list(GROUPS))
def test_documented_shell_blocks_run(group, tmp_path, forkserver, provided):
    sandbox = Sandbox(tmp_path / "sandbox", forkserver)
    ran, skipped, failures, outputs = set(), [], [], {}
    for page in GROUPS[group]:
        for number, block in enumerate(_BLOCK.findall((ROOT / page).read_text()), 1):
            where = f"{page} block {number}"
            reason = _skip_reason(block)
            commands = _commands(block, sandbox.root)
            if not reason and set(commands) <= ran:
                reason = "its commands already ran in this group"
            if reason:
                skipped.append(f"{where}: {reason}")
                continue
            start = time.time()
            _prepare(block, sandbox, provided)
            proc = sandbox.run(block)
            outputs[where] = proc.stdout
            print(f"{where}: exit {proc.returncode} in {time.time() - start:.0f}s")
            if proc.returncode:
                failures.append(_failure(where, block, proc))
            elif where in CHECKS:
                try:
                    CHECKS[where](sandbox, proc.stdout)
                except AssertionError as e:
                    failures.append(f"{where}: what it made:\n{e}")
            ran.update(commands)
        # The page's Python snippets, against the runs its shell blocks made.
        for number, code in enumerate(_PYTHON_BLOCK.findall((ROOT / page).read_text()), 1):
            where = f"{page} python block {number}"
            missing = [m for needle, m in PYTHON_NEEDS.items()
                       if needle in code and importlib.util.find_spec(m) is None]
            if missing:
                skipped.append(f"{where}: needs {', '.join(missing)} (not a tfllm dependency)")
                continue
            start = time.time()
            proc = sandbox.run_python(code, f"{page.replace('/', '_')}_{number}")
            print(f"{where}: exit {proc.returncode} in {time.time() - start:.0f}s")
            if proc.returncode:
                failures.append(_failure(where, code, proc))
    print("skipped:", *skipped, sep="\n  ")
    assert not failures, "\n\n".join(failures)
    assert ran
    ours = [where for where in CHECKS if where.split(" block ")[0] in GROUPS[group]]
    assert set(ours) <= set(outputs), f"checked blocks that did not run: {set(ours) - set(outputs)}"
    if "README.md" in GROUPS[group]:
        _check_journey(sandbox, outputs)
