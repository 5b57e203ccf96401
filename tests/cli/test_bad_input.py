"""Bad input: one clear line on stderr naming the flag/file, non-zero exit, no
traceback, and nothing half-written in the workdir."""

from pathlib import Path

import pytest
from conftest import last_stderr_line, run_cli, tiny_overrides


def _train(workdir, *overrides, corpus=None):
    base = tiny_overrides(corpus, steps=5) if corpus else []
    return run_cli("train", "--config=configs/gpt_tiny.py", f"--workdir={workdir}",
                   *base, *overrides)


def _assert_clean_failure(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = last_stderr_line(proc)
    assert "error:" in line, proc.stderr[-3000:]
    for needle in needles:
        assert needle in line, line


def _assert_nothing_written(workdir: Path):
    for name in ("config.json", "metrics.json", "tokenizer", "checkpoints"):
        assert not (workdir / name).exists(), name


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["--config.train.batch_size=-4"], ["config.train.batch_size", "positive"]),
        (["--config.model.num_layers=0"], ["config.model.num_layers"]),
        (["--config.model.name=lstm"], ["config.model.name", "gpt"]),
        (["--config.runtime.strategy=horovod"], ["config.runtime.strategy"]),
        (["--config.data.format=xml"], ["config.data.format"]),
    ],
)
def test_bad_config_values(tmp_path, overrides, needles):
    workdir = tmp_path / "w"
    proc = _train(workdir, *overrides)
    _assert_clean_failure(proc, *needles)
    _assert_nothing_written(workdir)


def test_wrong_type_override_is_rejected(tmp_path):
    proc = _train(tmp_path / "w", "--config.train.batch_size=lots")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "batch_size" in proc.stderr


def test_missing_config_file(tmp_path):
    proc = run_cli("train", "--config=configs/nope.py", f"--workdir={tmp_path / 'w'}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "nope.py" in proc.stderr


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ["config.data.train_path", "no such file"]),
        (b"", ["config.data.train_path", "empty"]),
        (b"\x00\x01\x02binary\x00" * 100, ["config.data.train_path", "binary"]),
        ("héllo wörld\n".encode("latin-1") * 50, ["config.data.train_path", "UTF-8"]),
    ],
    ids=["missing", "empty", "binary", "latin1"],
)
def test_bad_training_files(tmp_path, content, needles):
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    workdir = tmp_path / "w"
    proc = _train(workdir, f"--config.data.train_path={corpus}", corpus=str(corpus))
    _assert_clean_failure(proc, *needles)
    _assert_nothing_written(workdir)


def test_corpus_too_small_for_one_batch(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("To be, or not to be: that is the question.\n" * 3)
    workdir = tmp_path / "w"
    proc = _train(workdir, "--config.tokenizer.vocab_size=300", corpus=str(corpus))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (workdir / "checkpoints").exists()


def test_generate_without_training(tmp_path):
    proc = run_cli("generate", f"--workdir={tmp_path}", "--prompt=hi")
    _assert_clean_failure(proc, "--workdir")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--temperature=0"], "--temperature"),
        (["--sampler=top_p", "--top_p=1.5"], "--top_p"),
        (["--max_new_tokens=0"], "--max_new_tokens"),
        (["--sampler=beam"], "sampler"),
    ],
)
def test_bad_generate_flags(tmp_path, flags, needle):
    proc = run_cli("generate", f"--workdir={tmp_path}", "--prompt=hi", *flags)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr


# One table across every command: (command, args, words the one error line must
# contain). "{w}" is a fresh workdir, "{file}" a regular file, "{trained}" a
# trained workdir. Each case: non-zero exit, no traceback, one "error:" line.
TABLE = [
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.train.warmup_steps=-1"], ["config.train.warmup_steps"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.model.hidden_dim=30"], ["config.model.hidden_dim", "divisible"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={file}"], ["File exists"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}", "extra"], ["positional"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}", "--config.train.bogus=1"],
     ["--config.train.bogus", "no such config key"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}", "--config.trian.seed=1"],
     ["no such config key 'trian'", "Did you mean"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.train.init_from={w}/nowhere"], ["config.train.init_from"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.tokenizer.path={w}/nowhere"], ["config.tokenizer.path"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.runtime.strategy=parameter_server"], ["parameter_server"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.train.grad_accum_steps=5"], ["config.train.grad_accum_steps"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}",
               "--config.runtime.strategy=multi_worker"], ["TF_CONFIG"]),
    ("train", ["--config=configs/gpt_tiny.py", "--workdir={w}", "--config.train.batch_size=3",
               "--config.runtime.strategy=mirrored", "--config.runtime.logical_cpus=2"],
     ["config.train.batch_size", "not divisible"]),
    ("train", ["--workdir={w}"], ["--config", "config.json"]),
    ("train", ["--config=configs/cnn_sst2.py", "--workdir={w}", "--config.model.pooling=max"],
     ["config.model.pooling", "mean, cls, last"]),
    ("train", ["--config=configs/cnn_sst2.py", "--workdir={w}",
               "--config.data.dataset=shakespeare"], ["no labels"]),
    ("train", ["--config=configs/cnn_sst2.py", "--workdir={w}",
               "--config.model.cnn_pooling=max_pool_flatten"], ["config.model.conv_widths"]),
    ("train", ["--config=configs/transformer_sst2.py", "--workdir={w}",
               "--config.train.freeze_blocks=9"], ["config.train.freeze_blocks"]),
    ("train", ["--config=configs/mlp_sst2.py", "--workdir={w}",
               "--config.train.class_weights=inverse"], ["config.train.class_weights"]),
    ("generate", ["--workdir={w}", "--max_new_tokens=1000000"], ["--max_new_tokens"]),
    ("generate", ["--workdir={w}", "--num_samples=0"], ["--num_samples"]),
    ("generate", ["--workdir={w}", "--backend=saved_model"], ["no SavedModel"]),
    ("generate", ["--workdir={w}/missing"], ["--workdir", "no such directory"]),
    ("generate", ["--workdir={trained}", "--input_file={w}/none.txt", "--output_file={w}/o.jsonl"],
     ["--input_file", "no such file"]),
    ("generate", ["--workdir={trained}", "--input_file={file}", "--output_file={w}/o.jsonl"],
     ["--input_file", "has no prompts"]),
    ("generate", ["--workdir={trained}", "--input_file={prompts}", "--output_file={w}/no/o.jsonl"],
     ["--output_file", "no such directory"]),
    ("generate", ["--workdir={trained}", "--input_file={prompts}", "--output_file={w}"],
     ["--output_file", "is a directory"]),
    ("generate", ["--workdir={trained}", "--input_file={prompts}", "--output_file={w}/o.jsonl",
                  "--prompt=hi"], ["--input_file", "not both"]),
    ("generate", ["--workdir={trained}", "--input_file={prompts}"], ["--output_file"]),
    ("generate", ["--workdir={trained}", "--input_file={badjsonl}", "--output_file={w}/o.jsonl"],
     ["--input_file", ":2:", "'prompt'"]),
    ("generate", ["--workdir={trained}", "--input_file={prompts}", "--output_file={w}/o.jsonl",
                  "--batch_size=0"], ["--batch_size"]),
    ("generate", ["--workdir={w}", "--strategy=mirrored"], ["--strategy", "--input_file"]),
    ("evaluate", ["--workdir={trained}", "--strategy=multi_worker"], ["TF_CONFIG"]),
    ("evaluate", ["--workdir={w}"], ["--workdir"]),
    ("evaluate", ["--workdir={w}", "--batch_size=0"], ["--batch_size"]),
    ("evaluate", ["--workdir={trained}", "--data={w}/missing.txt"], ["--data", "no such file"]),
    ("evaluate", ["--workdir={trained}", "--data={file}"], ["--data", "empty"]),
    ("export", ["--workdir={w}"], ["--workdir"]),
    ("export", ["--workdir={w}", "--max_new_tokens=0"], ["--max_new_tokens"]),
    ("pipeline", ["--workdir={w}", "--config.lm.train.batch_size=0"],
     ["config.lm.train.batch_size"]),
    ("pipeline", ["--workdir={w}", "--config.train.batch_size=0"],  # the journey has parts
     ["--config.train.batch_size", "no such config key"]),
    ("pipeline", ["--workdir={w}", "--force=lm.train"], ["--force=lm.train"]),
]


@pytest.mark.parametrize(("command", "args", "needles"), TABLE,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(TABLE)])
def test_bad_input_table(request, tmp_path, command, args, needles):
    workdir = tmp_path / "w"
    workdir.mkdir()
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO:\nKING\n")
    bad_jsonl = tmp_path / "prompts.jsonl"
    bad_jsonl.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    trained = request.getfixturevalue("trained_workdir") if any(
        "{trained}" in a for a in args) else ""
    args = [a.format(w=workdir, file=a_file, trained=trained, prompts=prompts, badjsonl=bad_jsonl)
            for a in args]
    proc = run_cli(command, *args)
    _assert_clean_failure(proc, *needles)
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"tfllm-{command}: error:")]
    assert len(ours) == 1, proc.stderr[-2000:]
    _assert_nothing_written(workdir)
    assert not (workdir / ".lock").exists()
    assert not list(workdir.glob("o.jsonl*"))  # no (half-)written generate output
