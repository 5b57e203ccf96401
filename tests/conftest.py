"""Shared fixtures: a small corpus, a tiny-but-real config, and a trained workdir.

The tiny config trains a real GPT (2 layers, d 32) on the first 60 KB of the
bundled Tiny Shakespeare, so command tests exercise the whole data flow in
seconds instead of minutes.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CORPUS_BYTES = 60_000


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
    from tfllm.config import base_config, validate

    config = base_config()
    for flag in tiny_overrides(corpus, steps):
        key, value = flag.removeprefix("--config.").split("=", 1)
        section, name = key.split(".")
        old = config[section][name]
        config[section][name] = type(old)(value) if not isinstance(old, str) else value
    validate(config)
    return config


def run_cli(command: str, *args: str, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    """Runs `python -m tfllm.cli.<command> args...`, capturing text output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", f"tfllm.cli.{command}", *args],
        capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=env, **kwargs,
    )


def last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, corpus_file) -> str:
    """A tiny GPT trained by the real `tfllm-train` command (40 steps)."""
    workdir = str(tmp_path_factory.mktemp("trained") / "w")
    proc = run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
                   *tiny_overrides(corpus_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def build_trainer(config, workdir):
    """An LMTrainer on the tiny corpus, built the way `train_lm` builds it."""
    from tfllm.data.sources import ensure_tokenizer, lm_token_streams, load_text_splits
    from tfllm.models import build_model
    from tfllm.training.strategy import create_strategy
    from tfllm.training.trainer import LMTrainer

    strategy = create_strategy(config.runtime)
    splits = load_text_splits(config.data)
    tokenizer = ensure_tokenizer(config, str(workdir), splits.train)
    train_ids, eval_ids = lm_token_streams(config, tokenizer, splits)
    return LMTrainer(config, str(workdir), strategy,
                     build_model=lambda: build_model(config.model, tokenizer.vocab_size),
                     train_ids=train_ids, eval_ids=eval_ids)
