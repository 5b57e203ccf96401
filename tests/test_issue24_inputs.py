"""Regressions of issue 24: bad input and operator faults.

Prompt files split on newlines only, non-finite sampling flags, a quick run
shorter than the recipe's warmup, a signal that must not wait for a long inner
loop, and sentencepiece's chatter on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    REPO,
    build_trainer,
    last_stderr_line,
    run_cli,
    tiny_config,
    tiny_overrides,
)

from tfllm.config import base_config, validate
from tfllm.errors import ConfigError
from tfllm.inference.prompts import read_prompts
from tfllm.inference.sampling import check_sampler_args


# ------------------------------------------------------------ 8: prompt files
def test_text_prompts_split_on_newlines_only_and_drop_a_bom(tmp_path):
    path = tmp_path / "prompts.txt"
    # U+2028, form feed and a lone CR are text inside a line, not line breaks.
    path.write_bytes("\ufeffone\u2028still one\r\ntwo\x0cstill two\nthree\rstill three\n".encode())
    prompts = read_prompts(str(path))
    assert [(p.index, p.line, p.text) for p in prompts] == [
        (0, 1, "one\u2028still one"),
        (1, 2, "two\x0cstill two"),
        (2, 3, "three\rstill three"),
    ]


def test_jsonl_prompts_split_on_newlines_only_and_drop_a_bom(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = ["a\u2028b", "c\x85d", ""]  # json.dumps(ensure_ascii=False) keeps U+2028 and NEL raw
    text = "\r\n".join(json.dumps({"prompt": row}, ensure_ascii=False) for row in rows)
    path.write_bytes(("\ufeff" + text + "\n").encode())
    prompts = read_prompts(str(path))
    assert [(p.line, p.text) for p in prompts] == [(1, "a\u2028b"), (2, "c\x85d"), (3, "")]


# ------------------------------------------------------- 9: non-finite sampling
@pytest.mark.parametrize(
    ("temperature", "top_p", "flag"),
    [
        (float("inf"), 0.9, "--temperature"),
        (float("nan"), 0.9, "--temperature"),
        (1.0, float("nan"), "--top_p"),
        (1.0, float("inf"), "--top_p"),
    ],
)
def test_non_finite_sampling_values_are_refused(temperature, top_p, flag):
    with pytest.raises(ConfigError, match=flag) as info:
        check_sampler_args("top_p", temperature, 40, top_p, 10)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_generate_refuses_an_infinite_temperature_in_one_line(tmp_path):
    proc = run_cli(
        "generate",
        f"--workdir={tmp_path}",
        "--prompt=hi",
        "--temperature=inf",
        "--sampler=temperature",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert last_stderr_line(proc) == (
        "tfllm-generate: error: --temperature must be > 0 and finite (got inf)"
    )


# ---------------------------------------------------- 10: a run shorter than warmup
def test_warmup_longer_than_a_short_run_is_shortened_with_a_warning(caplog):
    config = base_config()
    config.train.num_steps, config.train.warmup_steps = 30, 100
    with caplog.at_level("WARNING"):
        validate(config)
    assert config.train.warmup_steps == 30
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "config.train.warmup_steps" in warnings[0] and "30" in warnings[0], warnings
    validate(config)  # already fits: no second warning, no change
    assert config.train.warmup_steps == 30


@pytest.mark.slow
def test_quick_run_trains_and_records_the_shortened_warmup(corpus_file, tmp_path):
    workdir = tmp_path / "w"
    proc = run_cli(
        "train",
        "--config=configs/gpt_tiny.py",
        f"--workdir={workdir}",
        *tiny_overrides(corpus_file, steps=20),
        "--config.train.warmup_steps=100",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "config.train.warmup_steps" in proc.stderr
    assert json.loads((workdir / "config.json").read_text())["train"]["warmup_steps"] == 20


# ----------------------------------------------------- 11: a signal mid-loop
def test_sigterm_stops_a_long_inner_loop_within_seconds_and_resumes(corpus_file, tmp_path):
    from tfllm.cli.common import setup_runtime
    from tfllm.training.trainer import TrainingInterrupted

    never = 1_000_000
    config = tiny_config(corpus_file, steps=never)
    config.train.steps_per_loop = 10_000
    config.train.eval_every = config.train.checkpoint_every = never
    setup_runtime(config)
    trainer = build_trainer(config, tmp_path / "w")
    real_loop, sent, timers = trainer._train_loop, [], []

    def send_sigterm():
        sent.append(time.time())
        os.kill(os.getpid(), signal.SIGTERM)

    def signal_soon(iterator, n):
        if not timers:  # the first loop: SIGTERM once it is tracing / stepping
            timers.append(threading.Timer(3.0, send_sigterm))
            timers[0].start()
        return real_loop(iterator, n)

    trainer._train_loop = signal_soon
    try:
        with pytest.raises(TrainingInterrupted, match="checkpoint saved") as info:
            trainer.train()
    finally:  # never let a late SIGTERM reach pytest itself
        for timer in timers:
            timer.cancel()
    waited = time.time() - sent[0]
    step = trainer.step
    assert 0 < step < 10_000, step
    assert waited < 30, waited  # the whole 10,000-step loop: a minute or more
    assert f"interrupted at step {step}" in str(info.value)
    latest = tf_latest(tmp_path / "w")
    assert latest.endswith(f"ckpt-{step}"), latest

    # The checkpoint resumes, at the step reached.
    config = tiny_config(corpus_file, steps=step + 5)
    resumed = build_trainer(config, tmp_path / "w")
    assert resumed.restore_or_initialize() == step
    assert resumed.train()["step"] == step + 5


def tf_latest(workdir) -> str:
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(workdir / "checkpoints")) or ""


# ------------------------------------------------- 12: sentencepiece chatter
def test_loading_a_tokenizer_keeps_sentencepiece_logs_off_stderr(tmp_path):
    from tfllm.data.tokenizer import Tokenizer

    directory = tmp_path / "tokenizer"
    Tokenizer.train(["to be or not to be\nthat is the question\n"] * 20, vocab_size=300).save(
        str(directory)
    )
    script = (
        "import sys; from tfllm.data.tokenizer import Tokenizer; "
        f"t = Tokenizer.load({str(directory)!r}); print(t.decode(t.encode('to be')))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "to be"
    assert "precompiled_charsmap" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_generate_keeps_sentencepiece_logs_off_stderr(trained_workdir):
    proc = run_cli(
        "generate", f"--workdir={trained_workdir}", "--prompt=ROMEO:", "--max_new_tokens=4"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "precompiled_charsmap" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_distillation_temperature_must_be_finite(value):
    from tfllm.config import base_config, validate
    from tfllm.errors import ConfigError

    config = base_config()
    config.compress.temperature = value
    with pytest.raises(ConfigError, match="config.compress.temperature"):
        validate(config)


# ------------------------------- an eval split too small for one batch: before step 1
def test_an_eval_split_smaller_than_one_batch_is_refused_before_training(corpus_file, tmp_path):
    workdir = tmp_path / "w"
    proc = run_cli(
        "train",
        "--config=configs/gpt_tiny.py",
        f"--workdir={workdir}",
        *tiny_overrides(corpus_file, steps=4),
        "--config.data.eval_fraction=0.004",
    )
    assert proc.returncode != 0
    line = last_stderr_line(proc)
    assert "config.data: the eval split (data.eval_fraction=0.004)" in line, proc.stderr[-1500:]
    assert "fewer than one batch of 8 windows of 32+1 tokens" in line
    assert "step " not in proc.stdout  # refused before any training step
    assert not (workdir / "checkpoints").exists()
