"""Shared fixtures: a small corpus, a tiny-but-real config, and a trained workdir.

The tiny config trains a real GPT (2 layers, d 32) on the first 60 KB of the
bundled Tiny Shakespeare, so command tests exercise the whole data flow in
seconds instead of minutes. `run_cli` forks each command from a server that
has already imported TensorFlow (`_forkserver`), so a command that runs for a
second does not pay five seconds of imports first.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

# The distributed tests' subprocess helpers, importable as `from conftest import ...`.
from distributed_helpers import (  # noqa: F401
    Cluster,
    launch_command,
    python_module,
    run_check_script,
    run_command,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CORPUS_BYTES = 60_000


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config, items):
    """Under xdist, the `longest` tests (the docs run's page groups, several minutes
    each) start first, each on its own worker.

    xdist's default `load` scheduling hands each worker a first batch of
    consecutive tests (a quarter of its share), then more batches as it runs
    dry; two long tests side by side would run one after the other on one
    worker while the other finishes everything else. So the i-th longest test
    goes to the front of the i-th worker's first batch.
    """
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    longest = [item for item in items if item.get_closest_marker("longest")]
    if workers < 2 or not longest:
        return
    batch = max(2, len(items) // workers // 4)  # xdist.scheduler.LoadScheduling.schedule
    rest = [item for item in items if not item.get_closest_marker("longest")]
    for i, item in enumerate(longest):
        rest.insert(min(i * batch, len(rest)), item)
    items[:] = rest


def shakespeare_head(n_bytes: int = CORPUS_BYTES) -> str:
    from tfllm.data.corpus import bundled_paths

    with gzip.open(bundled_paths("shakespeare")["train"], "rt", encoding="utf-8") as f:
        return f.read(n_bytes)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare_head.txt"
    path.write_text(shakespeare_head(), encoding="utf-8")
    return str(path)


def tiny_overrides(corpus: str, steps: int = 40) -> list[str]:
    """Command-line overrides that turn configs/gpt_tiny.py into a seconds-long run."""
    return [
        f"--config.data.train_path={corpus}",
        "--config.data.format=text",
        "--config.tokenizer.vocab_size=400",
        "--config.model.max_length=32",
        "--config.model.num_layers=2",
        "--config.model.num_heads=2",
        "--config.model.hidden_dim=32",
        "--config.model.intermediate_dim=64",
        "--config.model.dropout=0.0",
        f"--config.train.num_steps={steps}",
        "--config.train.batch_size=8",
        "--config.train.warmup_steps=5",
        "--config.train.steps_per_loop=10",
        "--config.train.eval_every=20",
        "--config.train.checkpoint_every=20",
        "--config.train.eval_batches=4",
        "--config.train.sample_tokens=8",
        "--config.export.max_new_tokens=12",
    ]


def tiny_config(corpus: str, steps: int = 40):
    """The same tiny run as a ConfigDict, for in-process library tests."""
    from tfllm.config import validate

    config = config_from_flags(tiny_overrides(corpus, steps))
    validate(config)
    return config


def config_from_flags(flags: list[str]):
    """base_config() with `--config.section.key=value` flags applied, as the CLI would."""
    from tfllm.config import base_config

    config = base_config()
    for flag in flags:
        key, value = flag.removeprefix("--config.").split("=", 1)
        section, name = key.split(".")
        old = config[section][name]
        config[section][name] = type(old)(value) if not isinstance(old, str) else value
    return config


FORKSERVER = REPO / "tests" / "docs" / "forkserver.py"
_SERVER: dict = {}  # this test process's plain fork server, started on first use
_SERVER_LOCK = threading.Lock()  # tests may call run_cli from several threads


def _checkout_path() -> str:
    """PYTHONPATH with this checkout first: a command under test imports this tfllm,
    not whichever checkout `pip install -e` last pointed the environment at."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def _forkserver() -> str:
    """The socket of a server that has TensorFlow imported and forks each command.

    Importing TF, Keras and keras_hub takes about 5 s of CPU, often longer than
    the command then runs (a bad flag, a 12-token generate). The child runs the
    module as `__main__` with the caller's argv, cwd, environment and pipes, as
    `python -m` would (tests/docs/forkserver.py: the docs run uses the same).
    """
    with _SERVER_LOCK:
        if "socket" not in _SERVER:
            root = tempfile.mkdtemp(prefix="tfllm-fs-")  # short: a socket path has a limit
            log = open(os.path.join(root, "log"), "w")  # noqa: SIM115 (open while it runs)
            env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
            env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", PYTHONPATH=_checkout_path())
            server = subprocess.Popen(
                [sys.executable, str(FORKSERVER), os.path.join(root, "s"), "--plain"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
                env=env,
            )
            _SERVER.update(server=server, log=log, root=root, socket=os.path.join(root, "s"))
    deadline = time.time() + 180
    while not os.path.exists(_SERVER["socket"]):
        server = _SERVER["server"]
        assert server.poll() is None, Path(_SERVER["log"].name).read_text()[-3000:]
        assert time.time() < deadline, "the test fork server did not start"
        time.sleep(0.1)
    return _SERVER["socket"]


@pytest.fixture(scope="session", autouse=True)
def _stop_forkserver():
    yield
    if "server" in _SERVER:
        _SERVER["server"].terminate()
        _SERVER["server"].wait(timeout=30)
        _SERVER["log"].close()
        shutil.rmtree(_SERVER["root"], ignore_errors=True)


def run_cli(
    command: str, *args: str, timeout: int = 600, fresh: bool = False, **kwargs
) -> subprocess.CompletedProcess:
    """Runs `python -m tfllm.cli.<command> args...`, capturing text output.

    The command is forked from this process's fork server (`_forkserver`)
    unless `fresh` (or TFLLM_TEST_FRESH=1 in the environment): then it starts a
    new interpreter, for a check across separately started processes.
    """
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", PYTHONPATH=_checkout_path()
    )
    module = f"tfllm.cli.{command}"
    argv = [sys.executable, "-m", module, *args]
    if not fresh and os.environ.get("TFLLM_TEST_FRESH") != "1":
        env["TFLLM_FORKSERVER"] = _forkserver()
        client = (
            f"import sys; sys.path.insert(0, {str(FORKSERVER.parent)!r}); "
            f"import forkserver; forkserver.client({module!r})"
        )
        argv = [sys.executable, "-c", client, *args]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        env=env,
        **kwargs,
    )


def last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, corpus_file) -> str:
    """A tiny GPT trained by the real `tfllm-train` command (40 steps)."""
    workdir = str(tmp_path_factory.mktemp("trained") / "w")
    proc = run_cli(
        "train",
        "--config=configs/gpt_tiny.py",
        f"--workdir={workdir}",
        *tiny_overrides(corpus_file),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def build_trainer(config, workdir):
    """An LMTrainer on the tiny corpus, built the way `train_lm` builds it."""
    from tfllm.data.sources import ensure_tokenizer, lm_token_streams, load_text_splits
    from tfllm.distribute.strategy import create_strategy
    from tfllm.models import build_model
    from tfllm.training.trainer import LMTrainer

    strategy = create_strategy(config.runtime)
    splits = load_text_splits(config.data)
    tokenizer = ensure_tokenizer(config, str(workdir), splits.train)
    train_ids, eval_ids = lm_token_streams(config, tokenizer, splits)
    return LMTrainer(
        config,
        str(workdir),
        strategy,
        build_model=lambda: build_model(config.model, tokenizer.vocab_size),
        train_ids=train_ids,
        eval_ids=eval_ids,
    )


# ----------------------------------------------------------- classifiers
TOPICS = {
    "sport": ["goal", "match", "team", "score", "coach"],
    "food": ["bread", "soup", "spice", "oven", "salad"],
    "music": ["guitar", "song", "choir", "drum", "melody"],
}
FILLER = "the a of and it was very with this that then some more people day".split()


def synthetic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Separable 3-class rows with string labels: each text holds 1-2 words of its topic
    among 4-30 shared filler words (so some rows are longer than a tiny max_length)."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(TOPICS))
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 30))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(TOPICS[label]))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path, rows, header=("text", "topic")) -> str:
    lines = ["\t".join(header)] + [f"{t}\t{y}" for t, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def labelled_files(tmp_path_factory) -> dict[str, str]:
    """train (900 rows) / eval (150) / test (150) TSVs of the synthetic topic task."""
    root = tmp_path_factory.mktemp("labelled")
    return {
        split: write_tsv(root / f"{split}.tsv", synthetic_rows(n, seed))
        for split, n, seed in (("train", 900, 0), ("eval", 150, 1), ("test", 150, 2))
    }


def classifier_overrides(files: dict[str, str], name: str, steps: int = 150) -> list[str]:
    """Flags for a seconds-long classifier run on the synthetic topic task."""
    return [
        f"--config.model.name={name}",
        f"--config.data.train_path={files['train']}",
        f"--config.data.eval_path={files['eval']}",
        f"--config.data.test_path={files['test']}",
        "--config.data.format=tsv",
        "--config.data.text_field=text",
        "--config.data.label_field=topic",
        "--config.tokenizer.vocab_size=400",  # every topic word becomes one piece
        "--config.model.max_length=64",
        "--config.model.num_layers=2",
        "--config.model.num_heads=2",
        "--config.model.hidden_dim=32",
        "--config.model.intermediate_dim=64",
        "--config.model.embedding_dim=32",
        "--config.model.conv_filters=16",
        "--config.model.dropout=0.0",
        f"--config.train.num_steps={steps}",
        "--config.train.batch_size=32",
        "--config.train.learning_rate=0.005",
        "--config.train.warmup_steps=10",
        "--config.train.steps_per_loop=25",
        "--config.train.eval_every=75",
        "--config.train.checkpoint_every=75",
        "--config.train.eval_batches=0",
    ]


def classifier_config(files: dict[str, str], name: str, steps: int = 150):
    """`classifier_overrides` as a validated ConfigDict, for in-process tests."""
    from tfllm.config import validate

    config = config_from_flags(classifier_overrides(files, name, steps))
    validate(config)
    return config


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory, labelled_files) -> str:
    """A small CNN classifier trained by the real `tfllm-train` command."""
    workdir = str(tmp_path_factory.mktemp("classifier") / "w")
    proc = run_cli(
        "train",
        "--config=configs/cnn_sst2.py",
        f"--workdir={workdir}",
        *classifier_overrides(labelled_files, "cnn_classifier"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def tiny_pretrained_journey_overrides(steps: int = 8) -> list[str]:
    """`tfllm-pipeline --profile=pretrained` shrunk to seconds for the tiny pretrained
    fixtures (a 64-position BERT, a 4-layer llama): few steps, short rows, a 1 % eval
    split of Tiny Shakespeare."""
    args = []
    for part in ("minilm", "distil.student"):
        for key, value in dict(
            num_steps=steps, eval_every=steps, checkpoint_every=steps,
            steps_per_loop=steps // 2, warmup_steps=0, batch_size=256,
        ).items():  # fmt: skip
            args.append(f"--config.{part}.train.{key}={value}")
    lm = dict(num_steps=4, eval_every=4, checkpoint_every=4, steps_per_loop=2, warmup_steps=0,
              batch_size=2)  # fmt: skip
    args += [f"--config.smollm2.train.{key}={value}" for key, value in lm.items()]
    return args + [
        "--config.minilm.train.eval_batches=2",
        "--config.minilm.model.max_length=64",  # the tiny BERT's positions
        "--config.distil.student.model.conv_filters=8",
        "--config.smollm2.model.max_length=32",
        "--config.smollm2.data.eval_fraction=0.01",
    ]


JOURNEY_STEPS = 12


def tiny_journey_overrides() -> list[str]:
    """Every part of configs/pipeline.py shrunk to seconds (bundled LM and SST-2 data)."""
    args = []
    for part in ("lm", "transformer", "cnn", "mlp", "distil.student"):
        args += [
            f"--config.{part}.train.num_steps={JOURNEY_STEPS}",
            f"--config.{part}.train.eval_every={JOURNEY_STEPS}",
            f"--config.{part}.train.checkpoint_every={JOURNEY_STEPS}",
            f"--config.{part}.train.steps_per_loop={JOURNEY_STEPS // 2}",
            f"--config.{part}.train.warmup_steps=0",
        ]
    for part in ("lm", "cnn", "mlp"):
        args.append(f"--config.{part}.tokenizer.vocab_size=400")
    return args + [
        "--config.lm.model.num_layers=2",
        "--config.lm.model.hidden_dim=32",
        "--config.lm.model.intermediate_dim=64",
        "--config.lm.model.max_length=32",
        "--config.lm.train.batch_size=8",
        "--config.lm.export.max_new_tokens=8",
        "--config.transformer.model.max_length=32",
        "--config.distil.student.model.max_length=32",
        "--config.distil.student.model.hidden_dim=16",
        "--config.distil.student.model.intermediate_dim=32",
        "--config.cnn.model.embedding_dim=16",
        "--config.cnn.model.conv_filters=8",
        "--config.mlp.model.embedding_dim=16",
        "--config.benchmark.steps=1",
        "--config.benchmark.warmup=1",
        "--config.benchmark.repeats=1",
        "--config.benchmark.decode_batch=2",
        "--config.benchmark.decode_prompt_len=4",
        "--config.benchmark.decode_new_tokens=4",
    ]
