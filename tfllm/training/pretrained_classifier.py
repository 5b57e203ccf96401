"""Classifiers on an imported backbone (`bert_classifier`, `llama_classifier`): config
and tokenizer rules.

A classifier fine-tuned from a published model is only as good as the
match between the two: the architecture must be the checkpoint's (so every
weight restores), and the rows must be the ones it was pretrained on (its own
vocabulary: WordPiece `[CLS] … [SEP]` with padding id 0 for BERT; the LM's own
tokenizer for a Llama, whose id 0 must be a special token so padding with it
never hides a real one). These checks run before
any data is read or anything is written, each failing in one line naming the
key to change; `tfllm.training.run.train_classifier` calls them.
"""

from __future__ import annotations

import os

import ml_collections

from tfllm.config import PRETRAINED_CLASSIFIERS, load_workdir_config
from tfllm.data.tokenizer_kinds import AnyTokenizer, tokenizer_kind
from tfllm.errors import ConfigError, DataError

# Architecture keys a classifier takes from the imported workdir it starts from.
_ADOPTED_KEYS = {
    "bert": (
        "num_layers", "num_heads", "hidden_dim", "intermediate_dim", "activation",
        "layer_norm_epsilon", "type_vocab_size",
    ),
    "llama": (
        "num_layers", "num_heads", "hidden_dim", "intermediate_dim", "layer_norm_epsilon",
        "num_kv_heads", "head_dim", "rope_theta", "rope_scaling_factor", "rope_low_freq_factor",
        "rope_high_freq_factor", "rope_original_max_length", "tie_embeddings",
    ),
}  # fmt: skip
# The tokenizer kinds (tokenizer.json "type") each backbone family reads.
_TOKENIZER_KINDS = {"bert": ("wordpiece",), "llama": ("byte_bpe", "sentencepiece")}


def adopt_pretrained_architecture(config: ml_collections.ConfigDict) -> None:
    """With `train.init_from`, the classifier's encoder is the imported model's.

    As keras-hub's `from_preset`: the checkpoint decides its own architecture,
    so `configs/minilm_sst2.py` need not repeat MiniLM's. A row longer than
    the source's positions (its context, for a Llama), or a source of another
    family, is an error.
    """
    name = config.model.name
    family = PRETRAINED_CLASSIFIERS[name]
    init_from = config.train.init_from
    if init_from:
        _adopt(config, name, family, init_from)
    if config.train.freeze_blocks > config.model.num_layers:
        raise ConfigError(
            f"config.train.freeze_blocks: {config.train.freeze_blocks} exceeds the encoder's "
            f"{config.model.num_layers} blocks"
        )


def _adopt(config: ml_collections.ConfigDict, name: str, family: str, init_from: str) -> None:
    """Copies the architecture keys of `init_from`'s config.json into `config.model`."""
    if not os.path.isfile(os.path.join(init_from, "config.json")):
        raise ConfigError(
            f"config.train.init_from: {init_from} has no config.json ({name} starts from a "
            f"workdir written by tfllm-import of a {family} checkpoint)"
        )
    source = load_workdir_config(init_from).model
    if source.name != family:
        raise ConfigError(
            f"config.train.init_from: {init_from} holds a {source.name!r} model; {name} starts "
            f"from an imported {family!r} workdir (tfllm-import --source=<a {family} checkpoint>)"
        )
    changed = []
    for key in _ADOPTED_KEYS[family]:
        if config.model[key] != source[key]:
            changed.append(f"{key} {config.model[key]}→{source[key]}")
            config.model[key] = source[key]
    if config.model.max_length > source.max_length:
        raise ConfigError(
            f"config.model.max_length: {config.model.max_length} exceeds the "
            f"{source.max_length} positions of the {family} model in {init_from}"
        )
    if changed:
        print(f"Backbone architecture from {init_from}: {', '.join(changed)}", flush=True)


def check_backbone_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The tokenizer the run will use must be the backbone family's, checked before
    `ensure_tokenizer` copies or learns one.

    A `bert_classifier` without `init_from` is allowed (an encoder trained from
    scratch) only when a WordPiece tokenizer is given (`tokenizer.path`, or the
    workdir's own when resuming): learning a SentencePiece model for it would
    give rows without [SEP] that no BERT was trained on.
    """
    name = config.model.name
    family = PRETRAINED_CLASSIFIERS.get(name)
    if family is None:
        return
    kinds = _TOKENIZER_KINDS[family]
    kind = " or ".join(kinds)
    own = os.path.join(workdir, "tokenizer")
    key, source = (
        ("--workdir", own)
        if os.path.isdir(own)
        else ("config.tokenizer.path", config.tokenizer.path)
        if config.tokenizer.path
        else ("config.train.init_from", config.train.get("init_from", ""))
    )
    if not source:
        raise ConfigError(
            f"config.train.init_from: empty, but {name} needs a {kind} tokenizer; set it to an "
            f"imported {family} workdir (or config.tokenizer.path to a {kind} tokenizer)"
        )
    directory = os.path.join(source, "tokenizer")
    directory = directory if os.path.isdir(directory) else source
    try:
        found = tokenizer_kind(directory)
    except DataError:
        found = None
    if found not in kinds:
        raise ConfigError(
            f"{key}: {source} holds {'no tokenizer' if found is None else f'a {found} tokenizer'};"
            f" {name} reads {kind} ids (use an imported {family} workdir's tokenizer)"
        )


def check_tokenizer_ids(config: ml_collections.ConfigDict, tokenizer: AnyTokenizer) -> None:
    """Classifiers pad with id 0: for BERT it must be the vocabulary's pad token; for a
    Llama, a special token (pad/unk/bos/eos, or an added token such as SmolLM2's
    `<|endoftext|>`), never a piece of ordinary text."""
    family = PRETRAINED_CLASSIFIERS.get(config.model.name)
    if family == "bert" and int(tokenizer.pad_id) != 0:
        raise ConfigError(
            f"config.model.name: {config.model.name} pads with id 0, but the tokenizer's pad "
            f"token has id {tokenizer.pad_id}"
        )
    if family == "llama" and not _id_zero_is_special(tokenizer):
        raise ConfigError(
            f"config.model.name: {config.model.name} pads with id 0, but id 0 of this "
            "tokenizer is ordinary text (a row ending in it would lose its last token)"
        )


def _id_zero_is_special(tokenizer: AnyTokenizer) -> bool:
    named = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id)
    added = getattr(tokenizer, "special_tokens", {})  # byte-level BPE's added tokens
    return 0 in {int(i) for i in named} or 0 in added.values()
