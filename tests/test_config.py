"""Config validation: every bad value is caught before work, with one line naming it."""

import dataclasses
import importlib.util
import json
import os

import ml_collections
import pytest

from tfllm.config import (
    CNN_POOLINGS,
    MODEL_FAMILIES,
    MODEL_NAMES,
    POOLINGS,
    SAMPLERS,
    SECTIONS,
    base_config,
    config_to_json,
    family_keys,
    load_workdir_config,
    validate,
)
from tfllm.config.fields import defaults, rules
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


def test_warmup_longer_than_training_is_shortened_to_fit():
    config = base_config()
    config.train.num_steps, config.train.warmup_steps = 10, 20
    validate(config)  # a quick run is not an error (issue 24): the warmup is cut to the run
    assert config.train.warmup_steps == 10


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


# --- the typed schemas (tfllm/config/) -------------------------------------------------

# Every key and default of base_config() as users and old config.json files know it
# (DESIGN §4). Written out, not derived: the schemas must reproduce exactly this.
# fmt: off
_TODAYS_DEFAULTS = {
    "data": dict(
        dataset="shakespeare", train_path="", eval_path="", test_path="", format="text",
        text_field="text", label_field="label", eval_fraction=0.1, on_bad_row="skip",
        max_row_chars=100_000, response_field="",
    ),
    "tokenizer": dict(path="", model_type="bpe", vocab_size=1024),
    "model": dict(
        name="gpt", max_length=128, num_layers=4, num_heads=4, hidden_dim=128,
        intermediate_dim=512, dropout=0.1, pooling="mean", causal=False, embedding_dim=128,
        conv_widths=(3, 4, 5), conv_filters=100, cnn_pooling="global_max", pool_size=2,
        mlp_hidden_dims=(256, 256), activation="gelu", layer_norm_epsilon=1e-5,
        num_kv_heads=0, head_dim=0, rope_theta=10000.0, rope_scaling_factor=0.0,
        rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_length=8192,
        tie_embeddings=True, context_length=0, type_vocab_size=2,
    ),
    "train": dict(
        num_steps=1000, batch_size=32, optimizer="adamw", learning_rate=1e-3,
        lr_schedule="cosine", warmup_steps=100, min_lr_ratio=0.1, lr_step_every=1000,
        lr_step_gamma=0.5, weight_decay=0.1, beta_1=0.9, beta_2=0.95, momentum=0.9,
        grad_clip_norm=1.0, grad_accum_steps=1, early_stopping_patience=0,
        early_stopping_min_delta=0.0, steps_per_loop=50, eval_every=250, eval_batches=20,
        checkpoint_every=250, max_checkpoints=3, seed=0, init_from="", freeze_blocks=0,
        freeze_embeddings=False, backbone_lr_scale=1.0, class_weights="none", lora_rank=0,
        lora_alpha=0.0, lora_targets="attention", lora_factorization="paper",
        sample_prompts=["ROMEO:", "To be, or not"], sample_tokens=48, weight_histograms=False,
    ),
    "runtime": dict(
        strategy="default", logical_cpus=0, precision="float32", jit_compile=False, tpu="",
        collective="auto", ps_shard_min_bytes=256 << 10, intra_op_threads=0,
        inter_op_threads=0, profile_steps=(), tensor_parallel=1, pipeline_stages=1,
        num_microbatches=1, remat=False,
    ),
    "export": dict(
        max_new_tokens=64, verify_prompts=["ROMEO:", "First Citizen:", ""], prefill_buckets=(32,)
    ),
    "compress": dict(
        method="", source="", sparsity=0.8, schedule="polynomial", m_by_n="", prune_frequency=0,
        prune_end_fraction=0.75, prune_embeddings=True, temperature=2.0, alpha=0.5,
        quantize_mode="int8", student_embeddings="random", augment=0.0, augment_mask=0.1,
        augment_ngram=0.25,
    ),
}
# fmt: on


def _typed(tree):
    """Values with their types, so 1 != 1.0 and (3,) != [3] (ConfigDict locks types)."""
    return {s: {k: (type(v), v) for k, v in d.items()} for s, d in tree.items()}


def test_base_config_keeps_todays_keys_defaults_and_types():
    config = base_config()
    assert isinstance(config, ml_collections.ConfigDict)
    assert _typed(config.to_dict()) == _typed(_TODAYS_DEFAULTS)


def test_every_key_is_declared_by_exactly_one_schema():
    for section, keys in _TODAYS_DEFAULTS.items():
        declared = [f.name for schema in SECTIONS[section] for f in dataclasses.fields(schema)]
        assert sorted(declared) == sorted(keys), section  # sorted lists: no key twice
    assert set(SECTIONS) == set(_TODAYS_DEFAULTS)


def test_schema_defaults_are_base_configs():
    config = base_config()
    for section, schemas in SECTIONS.items():
        for schema in schemas:
            for key, value in defaults(schema).items():
                assert _typed({"s": {key: config[section][key]}}) == _typed({"s": {key: value}})


def test_schema_list_defaults_are_not_shared():
    a, b = base_config(), base_config()
    a.train.sample_prompts.append("x")
    assert b.train.sample_prompts == ["ROMEO:", "To be, or not"]


def _wrong_type(kind):
    """A value of a type `kind` does not accept, and the name the error gives the want."""
    if kind is int:
        return "1", "int"
    if kind in (str, bool):
        return 1, kind.__name__
    return "x", "a number"  # (int, float) and (list, tuple): the message has always said so


_ALL_RULES = [
    (section, rule) for section, schemas in SECTIONS.items() for s in schemas for rule in rules(s)
]


@pytest.mark.parametrize(
    ("section", "rule"), _ALL_RULES, ids=[f"{s}.{r.name}" for s, r in _ALL_RULES]
)
def test_type_rule_comes_from_the_field_type(section, rule):
    raw = base_config().to_dict()
    value, want = _wrong_type(rule.kind)
    raw[section][rule.name] = value
    with pytest.raises(ConfigError) as info:
        validate(ml_collections.ConfigDict(raw))
    got = f"{type(value).__name__} {value!r}"
    assert str(info.value) == f"config.{section}.{rule.name}: expected {want}, got {got}"


def test_bool_is_never_a_number():
    for section, rule in _ALL_RULES:
        if rule.kind is bool or rule.kind == (list, tuple):
            continue
        raw = base_config().to_dict()
        raw[section][rule.name] = True
        with pytest.raises(ConfigError, match=f"config.{section}.{rule.name}: expected"):
            validate(ml_collections.ConfigDict(raw))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [  # whole messages, word for word (docs and CLI tests quote them)
        (
            "tokenizer.vocab_size",
            100,
            "config.tokenizer.vocab_size: must be an integer in "
            "[260, 1000000] (byte fallback needs 256 byte pieces + 4 specials), got 100",
        ),
        ("model.max_length", 1, "config.model.max_length: must be an integer in [2, 65536], got 1"),
        (
            "model.conv_widths",
            (),
            "config.model.conv_widths: must be a non-empty list of positive integers, got ()",
        ),
        (
            "model.mlp_hidden_dims",
            [0],
            "config.model.mlp_hidden_dims: must be a list of positive integers, got [0]",
        ),
        (
            "train.learning_rate",
            10,
            "config.train.learning_rate: must be a number in (0, 10), got 10",
        ),
        (
            "train.grad_clip_norm",
            -1.0,
            "config.train.grad_clip_norm: must be a non-negative number (0 = off), got -1.0",
        ),
        (
            "train.eval_batches",
            -1,
            "config.train.eval_batches: must be a non-negative integer (0 = all), got -1",
        ),
        ("train.lr_step_gamma", 0, "config.train.lr_step_gamma: must be in (0, 1], got 0"),
        ("train.min_lr_ratio", 1.5, "config.train.min_lr_ratio: must be in [0, 1], got 1.5"),
        (
            "runtime.tensor_parallel",
            0,
            "config.runtime.tensor_parallel: must be a positive integer (1 = off), got 0",
        ),
        (
            "runtime.profile_steps",
            (3, 2),
            "config.runtime.profile_steps: must be [] (off) or "
            "[start, stop] with 0 <= start < stop, got (3, 2)",
        ),
        (
            "data.dataset",
            "imdb",
            "config.data.dataset: must be one of shakespeare, sst2 (or "
            "empty with data.train_path set), got 'imdb'",
        ),
        ("data.text_field", "", "config.data.text_field: must be a non-empty field name, got ''"),
        (
            "compress.method",
            "zip",
            "config.compress.method: must be empty or one of prune, qat, "
            "distill, quantize, got 'zip'",
        ),
        (
            "compress.schedule",
            "cubic",
            "config.compress.schedule: must be polynomial or constant, got 'cubic'",
        ),
        (
            "compress.quantize_mode",
            "int2",
            "config.compress.quantize_mode: must be int8 or int4, got 'int2'",
        ),
        (
            "compress.temperature",
            0.0,
            "config.compress.temperature: must be a positive finite number, got 0.0",
        ),
        (
            "export.prefill_buckets",
            (0,),
            "config.export.prefill_buckets: must be a tuple of positive integers, got (0,)",
        ),
    ],
)
def test_range_messages_word_for_word(key, value, message):
    raw = base_config().to_dict()
    section, name = key.split(".")
    raw[section][name] = value
    with pytest.raises(ConfigError) as info:
        validate(ml_collections.ConfigDict(raw))
    assert str(info.value) == message


def test_a_missing_key_is_named():
    raw = base_config().to_dict()
    del raw["train"]["sample_tokens"]
    with pytest.raises(ConfigError) as info:
        validate(ml_collections.ConfigDict(raw))
    assert str(info.value) == "config.train.sample_tokens: missing (add it to your config file)"


def test_unvalidated_prompt_lists_stay_unchecked():
    # Never checked before the schemas; checking them now would refuse runnable configs.
    raw = base_config().to_dict()
    del raw["train"]["sample_prompts"]
    raw["export"]["verify_prompts"] = ("a",)
    validate(ml_collections.ConfigDict(raw))


def test_model_families_name_the_models_and_cover_the_model_section():
    assert tuple(MODEL_FAMILIES) == MODEL_NAMES
    covered = {key for name in MODEL_NAMES for key in family_keys(name)}
    assert covered == set(_TODAYS_DEFAULTS["model"])
    assert "pooling" in family_keys("transformer_classifier")
    assert "num_heads" in family_keys("gpt") and "conv_widths" not in family_keys("gpt")
    assert "num_heads" not in family_keys("cnn_classifier")
    assert "embedding_dim" in family_keys("mlp_classifier")


_FAMILY_BAD_VALUES = {
    "pooling": ("max", "config.model.pooling: must be one of mean, cls, last, got 'max'"),
    "causal": (1, "config.model.causal: expected bool, got int 1"),
    "conv_filters": (0, "config.model.conv_filters: must be a positive integer, got 0"),
    "cnn_pooling": (
        "avg",
        "config.model.cnn_pooling: must be one of global_max, max_pool_flatten, got 'avg'",
    ),
    "mlp_hidden_dims": (
        [-1],
        "config.model.mlp_hidden_dims: must be a list of positive integers, got [-1]",
    ),
    "embedding_dim": (1.5, "config.model.embedding_dim: expected int, got float 1.5"),
    "num_layers": (0, "config.model.num_layers: must be a positive integer, got 0"),
    "activation": (
        "swish",
        "config.model.activation: must be one of gelu, gelu_approximate, relu, silu, got 'swish'",
    ),
    "rope_theta": (0.0, "config.model.rope_theta: must be a positive number, got 0.0"),
}


@pytest.mark.parametrize("active", MODEL_NAMES)
@pytest.mark.parametrize("key", sorted(_FAMILY_BAD_VALUES))
def test_family_keys_are_checked_whichever_family_is_active(active, key):
    # Today's behaviour, kept: a ConfigDict carries every family's keys and a typo in
    # one (tests/cli/test_bad_input.py: --config.model.pooling=max on a CNN) is refused.
    config = base_config()
    config.model.name = active
    config.data.dataset = "shakespeare" if active == "gpt" else "sst2"
    validate(config)
    raw = config.to_dict()
    value, message = _FAMILY_BAD_VALUES[key]
    raw["model"][key] = value
    with pytest.raises(ConfigError) as info:
        validate(ml_collections.ConfigDict(raw))
    assert str(info.value) == message


def test_name_lists_are_defined_once():
    from tfllm.inference import sampling
    from tfllm.models import AVAILABLE, classifier, cnn

    assert AVAILABLE is MODEL_NAMES
    assert classifier.POOLINGS is POOLINGS and cnn.CNN_POOLINGS is CNN_POOLINGS
    assert sampling.SAMPLERS is SAMPLERS


_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.mark.parametrize(
    "name", sorted(f for f in os.listdir(_CONFIGS) if f.endswith(".py") and f != "pipeline.py")
)
def test_every_shipped_recipe_validates(name):
    """A recipe in configs/ is a complete, valid config (the journey's parts are
    validated by the pipeline's own tests)."""
    spec = importlib.util.spec_from_file_location("_recipe", os.path.join(_CONFIGS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    validate(config)
    assert config.model.name in MODEL_NAMES
