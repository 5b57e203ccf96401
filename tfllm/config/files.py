"""Reading configs: Python config files, and the config.json a run (or an import) leaves
in its workdir, which `--config=` takes too."""

from __future__ import annotations

import importlib.util
import json
import os

import ml_collections

from tfllm.config.schema import base_config
from tfllm.errors import ConfigError


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Loads a config file outside absl flags (the pipeline uses this).

    A `.json` file is a config a run or an import wrote (`W/config.json`), so
    `--config=W/config.json` starts a new run with W's model, e.g. to fine-tune
    an imported checkpoint (`train.init_from=W`); anything else is a Python
    file defining `get_config()`.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such file: {path}")
    if path.endswith(".json"):
        return read_config_json(path)
    spec = importlib.util.spec_from_file_location("tfllm_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config: {path} defines no get_config()")
    return module.get_config()


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a ConfigDict saved by `config_to_json` (lists stay lists)."""
    return ml_collections.ConfigDict(json.loads(text))


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (`W/config.json`).

    Merged onto `base_config()` so that a run saved before a key existed loads
    with that key's default, and every later check finds every key.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"--workdir: {workdir} has no config.json (train there first, or pass --config)"
        )
    return read_config_json(path)


def read_config_json(path: str) -> ml_collections.ConfigDict:
    """A saved `config.json`, merged onto `base_config()`: a run saved before a
    key existed loads with that key's default, and every later check finds every key."""
    try:
        with open(path, encoding="utf-8") as f:
            config = config_from_json(f.read())
        merged = base_config()
        merged.update(config)  # keys added to the schema since the run get their defaults
        saved_train = config.get("train", {})
        if saved_train.get("lora_rank", 0) and "lora_factorization" not in saved_train:
            # Not the default: LoRA runs saved before the key existed trained Keras'
            # adapters, and their checkpoints hold that shape.
            merged.train.lora_factorization = "keras"
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path}: unreadable config ({e})") from None
    return merged
