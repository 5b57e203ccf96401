"""The whole config: which schemas make up each section, its defaults, and `validate`.

`base_config()` is assembled from the schemas' defaults, so a key, its default
and its check are written once, side by side. It returns a plain
`ml_collections.ConfigDict` (the contract every command, recipe and config
file relies on: dotted `--config.x.y=` overrides, type-locked assignment,
`to_dict()`), not the dataclasses themselves.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from tfllm.config.fields import defaults, rules
from tfllm.config.model import MODEL_SCHEMAS
from tfllm.config.relations import check_relations
from tfllm.config.sections import (
    CompressConfig,
    DataConfig,
    ExportConfig,
    RuntimeConfig,
    TokenizerConfig,
    TrainConfig,
)
from tfllm.errors import ConfigError

# config.<section> -> the schemas whose keys it holds, in the order validate checks them.
SECTIONS: dict[str, tuple[type, ...]] = {
    "data": (DataConfig,),
    "tokenizer": (TokenizerConfig,),
    "model": MODEL_SCHEMAS,
    "train": (TrainConfig,),
    "runtime": (RuntimeConfig,),
    "export": (ExportConfig,),
    # Set by tfllm-compress (docs/compression.md).
    "compress": (CompressConfig,),
}


def base_config() -> ml_collections.ConfigDict:
    """Every key with its default; recipe files in configs/ start from this."""
    config = ml_collections.ConfigDict()
    for section, schemas in SECTIONS.items():
        keys: dict[str, Any] = {}
        for schema in schemas:
            keys.update(defaults(schema))
        config[section] = ml_collections.ConfigDict(keys)
    return config


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            raise ConfigError(f"config.{dotted}: missing (add it to your config file)")
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every known key's type and range; raises ConfigError on the first problem.

    Keys are checked section by section in schema order, then the cross-field
    relations (`tfllm.config.relations`; a warmup longer than the run is
    shortened in place, with a warning, not refused). Keys no schema declares
    are left alone here; config_flags already refuses unknown `--config.` overrides.
    """
    for section, schemas in SECTIONS.items():
        for schema in schemas:
            for rule in rules(schema):
                rule.apply(section, _lookup(config, f"{section}.{rule.name}"))
    check_relations(config)
