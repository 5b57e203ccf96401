"""Every tfllm command in README.md and docs/*.md names real flags, enum values,
config files and config keys, so a renamed flag or key fails here and not in a
user's shell. It also covers the blocks test_docs_run.py cannot execute (a GCS
bucket, other hosts); test_docs_run.py runs the rest with tiny settings.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = {
    "tfllm-train": "tfllm.cli.train",
    "tfllm-evaluate": "tfllm.cli.evaluate",
    "tfllm-generate": "tfllm.cli.generate",
    "tfllm-export": "tfllm.cli.export",
    "tfllm-serve": "tfllm.cli.serve",
    "tfllm-pipeline": "tfllm.cli.pipeline",
    "tfllm-benchmark": "tfllm.cli.benchmark",
    "tfllm-compress": "tfllm.cli.compress",
    "tfllm-import": "tfllm.cli.import_checkpoint",
}
LAUNCH_FLAGS = {
    "workers", "ps", "restart_workers", "norestart_workers", "max_restarts", "stop_timeout"
}  # fmt: skip
_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
_FLAG = re.compile(r"^\s+--(\[no\])?([\w.]+):(?: <([^>]+)>:)?", re.M)
_SEPARATORS = {"&&", "||", "|", ";", "&", "do", "then", "done"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every tfllm-* command in a shell block of the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in _BLOCK.findall(text):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in _logical_lines(joined):
                tokens = shlex.split(line.replace(";", " ; "), comments=True)
                current: list[str] | None = None
                for token in tokens + [";"]:
                    if token in _SEPARATORS:
                        if current:
                            found.append((f"{doc.relative_to(ROOT)}: {line.strip()[:80]}", current))
                        current = None
                    elif current is not None:
                        current.append(token)
                    elif token in COMMANDS or token == "tfllm-launch":
                        current = [token]
    return found


def _logical_lines(block: str) -> list[str]:
    """Lines of a shell block, a quoted string spanning lines kept as one."""
    lines, pending = [], ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the string goes on
            continue
        lines.append(pending)
        pending = ""
    return lines


@functools.cache
def command_flags(command: str) -> dict[str, tuple[str, ...] | None]:
    """flag name → allowed values (None: any), from the command's --helpfull."""
    proc = subprocess.run(
        [sys.executable, "-m", COMMANDS[command], "--helpfull"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    flags: dict[str, tuple[str, ...] | None] = {}
    for negatable, name, choices in _FLAG.findall(proc.stdout):
        values = tuple(choices.split("|")) if choices else None
        flags[name] = values
        if negatable:
            flags["no" + name] = None
    assert "workdir" in flags, proc.stdout[-2000:] + proc.stderr[-2000:]
    return flags


@functools.cache
def load_config(path: str):
    file, _, argument = path.partition(":")
    spec = importlib.util.spec_from_file_location("doc_config", ROOT / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()


def _has_key(config, dotted: str) -> bool:
    node = config
    for name in dotted.split("."):
        if not hasattr(node, "keys") or name not in node:
            return False
        node = node[name]
    return True


def _workdir_config(path: str) -> str | None:
    """The workdir whose config.json `path` names (a run's own config), else None."""
    file = Path(path)
    return str(file.parent) if file.name == "config.json" and file.parent != Path() else None


@functools.cache
def _documented_workdirs() -> frozenset[str]:
    """Every --workdir a documented command writes, so a later --config=W/config.json holds."""
    return frozenset(
        arg.partition("=")[2]
        for _, argv in documented_commands()
        for arg in argv
        if arg.startswith("--workdir=")
    )


def check_command(argv: list[str]) -> list[str]:
    """The problems with one documented command line (empty when it is right)."""
    command, args = argv[0], argv[1:]
    if command == "tfllm-launch":
        split = args.index("--") if "--" in args else len(args)
        problems = [
            f"tfllm-launch has no flag {a}"
            for a in args[:split]
            if a.startswith("--") and a[2:].split("=")[0] not in LAUNCH_FLAGS
        ]
        inner = args[split + 1 :]
        return problems + (check_command(inner) if inner else ["tfllm-launch without a command"])
    if command not in COMMANDS:
        return [f"{command} is not a tfllm command"]
    flags = command_flags(command)
    problems, config_path, overrides = [], None, []
    for arg in args:
        if not arg.startswith("--"):
            problems.append(f"{command}: positional argument {arg!r}")
            continue
        name, _, value = arg[2:].partition("=")
        if name.startswith("config."):
            overrides.append(name[len("config.") :])
        elif name not in flags:
            problems.append(f"{command} has no flag --{name}")
        elif name == "config":
            config_path = value
        elif flags[name] and "$" not in value:
            for item in value.split(",") if name == "force" else [value]:
                if item not in flags[name]:
                    problems.append(f"{command} --{name}={item}: not one of {flags[name]}")
    made_by_a_command = config_path is not None and _workdir_config(config_path)
    if made_by_a_command:
        if made_by_a_command not in _documented_workdirs():
            return problems + [f"{command}: no documented command writes {config_path}"]
    elif config_path is not None and not (ROOT / config_path.partition(":")[0]).is_file():
        return problems + [f"{command}: no config file {config_path}"]
    if overrides:
        if config_path is None and command != "tfllm-pipeline":
            return problems + [f"{command}: --config.* overrides without --config"]
        from tfllm.config import base_config

        # A workdir's config.json holds every key, as base_config does.
        if made_by_a_command:
            config = base_config()
        else:
            config = load_config(config_path or "configs/pipeline.py")

        if "model" in config:  # a model recipe: base_config fills the keys it omits
            full = base_config()
            full.update(config)
            config = full
        problems += [f"{command}: no config key {k}" for k in overrides if not _has_key(config, k)]
    return problems


DOCUMENTED = documented_commands()


def test_docs_have_commands():
    assert len(DOCUMENTED) > 50  # the extractor still finds them


@pytest.mark.parametrize("where, argv", DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_documented_command_is_valid(where, argv):
    assert check_command(argv) == [], where


def test_checker_catches_mistakes():
    assert check_command(["tfllm-train", "--config=configs/gpt_tiny.py", "--num_stepz=3"])
    assert check_command(["tfllm-generate", "--workdir=w", "--sampler=nucleus"])
    assert check_command(["tfllm-train", "--config=configs/gpt_tiny.py", "--config.train.nope=1"])
    assert check_command(["tfllm-pipeline", "--workdir=w", "--config.lm.train.nope=1"])
    assert check_command(["tfllm-train", "--config=configs/missing.py"])
    assert check_command(["tfllm-launch", "--workers=2", "--", "tfllm-train", "--bogus"])
    assert not check_command(["tfllm-pipeline", "--workdir=w", "--config.lm.train.num_steps=9"])


def test_documented_repo_files_exist():
    """`python scripts/x.py`, `bash scripts/y.sh`, `configs/z.py` in any shell block."""
    missing = []
    for doc in DOCS:
        for block in _BLOCK.findall(doc.read_text(encoding="utf-8")):
            for path in re.findall(r"\b((?:scripts|examples|configs)/[\w./-]+\.(?:py|sh))", block):
                if not (ROOT / path).is_file():
                    missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert missing == []
