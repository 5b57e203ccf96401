"""Tiny settings for a documented command: the same command, seconds instead of minutes.

The docs run executes every command as written and appends overrides, which
win because absl and ml_collections keep the last value. So the documented
flags, config files, workdirs and chaining are what runs, and only the sizes
shrink. The rules follow the config's own keys (a key the config lacks is
never added), so a new recipe gets tiny settings without a change here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import ml_collections

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from conftest import (  # noqa: E402  (tests/ is not a package)
    tiny_journey_overrides,
    tiny_pretrained_journey_overrides,
)

STEPS = 8
# Model sizes by model.name; the transformer classifier matches the GPT so a
# classifier fine-tuned from a tiny GPT (init_from) loads its weights.
_TRANSFORMER = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64)
MODEL = {
    "gpt": _TRANSFORMER,
    "transformer_classifier": _TRANSFORMER,
    "cnn_classifier": dict(embedding_dim=16, conv_filters=8),
    "mlp_classifier": dict(embedding_dim=16),
    # An imported encoder's architecture is its own; the tiny BERT fixture has 64 positions.
    "bert_classifier": dict(max_length=64),
}
TRAIN = dict(
    num_steps=STEPS,
    eval_every=STEPS,
    checkpoint_every=STEPS,
    steps_per_loop=STEPS // 2,
    warmup_steps=0,
    eval_batches=2,
    batch_size=8,
    sample_tokens=8,
)
# A classifier scores its whole dev split once training ends (SST-2's is
# 6,735 rows): 27 batches of 256, not 842 of 8. On distributed.md's 2 x 2
# tensor-parallel mesh that cut its training command from 114 s to 39 s.
CLASSIFIER_BATCH_SIZE = 256
BENCHMARK_FLAGS = [
    "--steps=2",
    "--warmup=1",
    "--repeats=1",
    "--decode_batch=2",
    "--decode_prompt_len=4",
    "--decode_new_tokens=8",
]
MAX_LENGTH = 128  # long enough for every documented generate / script call


def rewrite(module: str, argv: list[str], cwd: str) -> list[str]:
    """`argv` plus the tiny overrides for `module` (e.g. tfllm.cli.train)."""
    command = module.rsplit(".", 1)[-1]
    flags = _flags(argv)
    if command == "pipeline" and flags.get("profile") == "pretrained":
        return argv + tiny_pretrained_journey_overrides()
    if command == "pipeline" and _is_journey(flags.get("config", "")):
        return argv + tiny_journey_overrides()
    if command in ("train", "pipeline"):
        extra = config_overrides(_load(flags["config"], cwd))
        if int(flags.get("config.model.max_length", 0)) > MAX_LENGTH:  # the command's own window
            extra.append(f"--config.model.max_length={MAX_LENGTH}")
        return argv + extra
    if command == "benchmark":
        extra = ["--repeats=1", "--warmup=1", "--decode_new_tokens=8"]  # --mode=edge
        if "config" in flags:
            config = _load(flags["config"], cwd)
            extra = config_overrides(config, train=False) + ["--config.train.batch_size=2"]
            extra += BENCHMARK_FLAGS
        return argv + extra
    if command == "compress":
        return argv + ["--steps=2"]
    return argv


def config_overrides(config, train: bool = True) -> list[str]:
    """`--config.*` overrides that shrink `config` (only keys it has)."""
    out = []
    if not config.tokenizer.path and not config.train.get("init_from"):
        out.append("--config.tokenizer.vocab_size=400")
    for key, value in MODEL.get(config.model.name, {}).items():
        out.append(f"--config.model.{key}={value}")
    if config.model.max_length > MAX_LENGTH:
        out.append(f"--config.model.max_length={MAX_LENGTH}")
    if train:
        train_overrides = dict(TRAIN)
        if config.model.name not in ("gpt", "llama"):
            train_overrides["batch_size"] = CLASSIFIER_BATCH_SIZE
        out += [f"--config.train.{key}={value}" for key, value in train_overrides.items()]
        out.append("--config.export.max_new_tokens=8")
    return out


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def _is_journey(spec: str) -> bool:
    return spec.split(":", 1)[0] in ("", "configs/pipeline.py")


def _load(spec: str, cwd: str):
    """The ConfigDict of `--config=path[:arg]`, as absl's config_flags would build it."""
    path, _, arg = spec.partition(":")
    if path.endswith(".json"):  # a workdir's config.json (e.g. an imported model's)
        with open(os.path.join(cwd, path), encoding="utf-8") as f:
            return ml_collections.ConfigDict(json.load(f))
    module_spec = importlib.util.spec_from_file_location("_docs_config", os.path.join(cwd, path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
