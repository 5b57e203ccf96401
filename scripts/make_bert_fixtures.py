"""Writes the BERT reference fixture the tests compare against.

    python scripts/make_bert_fixtures.py [--out tests/fixtures/pretrained]

Needs transformers, torch (CPU) and tokenizers, which CI does not install:
the outputs are committed and tests/pretrained/test_bert.py and
test_wordpiece.py read them. The files are deterministic for a given seed and
library versions (recorded in `reference.json`).

`bert_tiny/` is a tiny random `BertModel` (2 layers, hidden 32, 4 heads, exact
GELU) in Hugging Face layout: config.json, model.safetensors, vocab.txt,
tokenizer_config.json and HF's tokenizer.json (from `BertTokenizerFast`).
Every parameter is redrawn after transformers' initialisation (biases and
LayerNorm shifts non-zero, weights of std 0.3), so a misplaced tensor moves
the outputs and the activations reach where exact and tanh GELU differ.
`reference.npz` holds fixed token ids (padded rows), the attention mask, token
type ids and transformers' last_hidden_state and pooler_output in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

SEED = 0
# As in BERT's own vocabularies, [PAD] is 0 and [unused*] pieces come before
# the other specials, so no test can assume they are 0-4.
SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(60)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a of and to is was it this that movie film great good bad not very "
    "hello world run un ##able ##ing ##ed ##s ##ly play ##er fine story acting plot "
    "actor actress scene scenes music score funny boring long short best worst love "
    "hate watch watched watching time times first last never ever again one two "
    "three character characters end ending director script ##ness ##ful ##less "
    "comedy drama horror thriller action family kids cast camera dialogue sound "
    "effects visual beautiful terrible"
).split()
# Characters that survive BERT's uncased normalization (accents stripped, lowercase).
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
EXTRA = ["σ", "ς", "π", "ж", "ß", "中", "文", "日", "本", "語", "字", "😀", "¿", "«", "»", "—"]


def vocabulary() -> list[str]:
    """Specials, then whole characters, their "##" continuations and some words (~280).

    Over 260 pieces: tfllm's config checks `tokenizer.vocab_size` >= 260, so a
    smaller fixture could not be imported by `tfllm-import`."""
    vocab = SPECIALS + CHARS + EXTRA + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [w for w in WORDS if w not in vocab]
    return vocab


def write_bert(out: str) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    vocab = vocabulary()
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertModel(config).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "LayerNorm.weight" in name:
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_((0.3 if param.dim() > 1 else 0.2) * noise)

    directory = os.path.join(out, "bert_tiny")
    staging = tempfile.mkdtemp(prefix="bert_tiny.", dir=out)
    model.save_pretrained(staging, safe_serialization=True)
    with open(os.path.join(staging, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    _write_tokenizer(staging)

    rng = np.random.default_rng(SEED)
    lengths = [12, 7, 3]
    ids = np.zeros((len(lengths), 12), np.int32)
    types = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(len(SPECIALS), len(vocab), n)
        ids[row, 0], ids[row, n - 1] = vocab.index("[CLS]"), vocab.index("[SEP]")
        types[row, n // 2 : n] = 1  # a second segment, so token_type_embeddings matter
    mask = (np.arange(12)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    with torch.no_grad():
        result = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
        )
    np.savez(
        os.path.join(staging, "reference.npz"),
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=types,
        last_hidden_state=result.last_hidden_state.numpy().astype(np.float32),
        pooler_output=result.pooler_output.numpy().astype(np.float32),
    )
    _record(staging)
    for name in os.listdir(staging):  # save_pretrained's extras are not fixtures
        if name not in KEEP:
            os.remove(os.path.join(staging, name))
    for name in os.listdir(staging):  # mkstemp-style 0600 files would annoy a reader
        os.chmod(os.path.join(staging, name), 0o644)
    os.chmod(staging, 0o755)
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.replace(staging, directory)
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    print(f"wrote {directory} ({size / 1024:.0f} KB)")


def _write_tokenizer(directory: str) -> None:
    """HF's tokenizer.json (`tokenizers`' own BERT WordPiece) and a tokenizer_config.json.

    Not `BertTokenizerFast(vocab_file=...).save_pretrained`: transformers 5
    ignores `vocab_file` there and writes a tokenizer.json of the 5 special
    tokens only (measured with 5.24).
    """
    from tokenizers.implementations import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(
        os.path.join(directory, "vocab.txt"), lowercase=True, strip_accents=None
    )
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        **{f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")},
        "model_max_length": 64,
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
        f.write("\n")


KEEP = {
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "reference.npz",
    "reference.json",
}


def _record(directory: str) -> None:
    import tokenizers
    import torch
    import transformers

    with open(os.path.join(directory, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "made_by": "scripts/make_bert_fixtures.py",
                "seed": SEED,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "tokenizers": tokenizers.__version__,
            },
            f,
            indent=1,
        )
        f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument(
        "--out", default=os.path.join(here, "..", "tests", "fixtures", "pretrained")
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write_bert(args.out)


if __name__ == "__main__":
    main()
