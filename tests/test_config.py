"""Config validation: every bad value is caught before work, with one line naming it."""

import json

import ml_collections
import pytest

from tfllm.config import base_config, config_to_json, load_workdir_config, validate
from tfllm.errors import ConfigError


def test_base_config_is_valid():
    validate(base_config())


def test_bad_row_defaults():
    data = base_config().data
    assert data.on_bad_row == "skip" and data.max_row_chars == 100_000


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.batch_size", -4, "config.train.batch_size: must be a positive integer"),
        ("train.batch_size", "8", "config.train.batch_size: expected int"),
        ("train.num_steps", 0, "config.train.num_steps: must be a positive integer"),
        ("train.learning_rate", -1.0, "config.train.learning_rate: must be"),
        ("train.optimizer", "adagrad", "config.train.optimizer: must be one of sgd"),
        ("model.name", "lstm", "config.model.name: must be one of gpt"),
        ("model.num_layers", True, "config.model.num_layers: expected int, got bool"),
        ("model.dropout", 1.5, "config.model.dropout: must be in [0, 1)"),
        ("data.format", "xml", "config.data.format: must be one of text"),
        ("data.on_bad_row", "ignore", "config.data.on_bad_row: must be one of skip, fail"),
        ("data.max_row_chars", 0, "config.data.max_row_chars: must be a positive integer"),
        ("data.max_row_chars", 1e5, "config.data.max_row_chars: expected int, got float"),
        ("runtime.strategy", "horovod", "config.runtime.strategy: must be one of default"),
        ("runtime.precision", "int8", "config.runtime.precision: must be one of float32"),
        ("tokenizer.vocab_size", 100, "config.tokenizer.vocab_size: must be an integer in [260"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    # Built from a plain dict, as a hand-edited config.json would be: ConfigDict's
    # own type locking does not apply there, so validate() must catch types too.
    raw = base_config().to_dict()
    section, name = key.split(".")
    raw[section][name] = value
    config = ml_collections.ConfigDict(raw)
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_heads_must_divide_width():
    config = base_config()
    config.model.hidden_dim, config.model.num_heads = 100, 3
    with pytest.raises(ConfigError, match="not divisible"):
        validate(config)


def test_warmup_longer_than_training_is_rejected():
    config = base_config()
    config.train.num_steps, config.train.warmup_steps = 10, 20
    with pytest.raises(ConfigError, match="warmup_steps"):
        validate(config)


def test_workdir_config_round_trip_fills_new_keys(tmp_path):
    config = base_config()
    config.train.num_steps = 7
    saved = config.to_dict()
    del saved["train"]["sample_tokens"]  # a key added to the schema after the run
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = load_workdir_config(str(tmp_path))
    assert loaded.train.num_steps == 7
    assert loaded.train.sample_tokens == base_config().train.sample_tokens
    assert config_to_json(loaded) == config_to_json(config)


def test_missing_workdir_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        load_workdir_config(str(tmp_path))
