"""Pre-tokenization for byte-level BPE, in the graph, split exactly as Hugging Face does.

Hugging Face `tokenizers` splits text with Oniguruma regexes; TensorFlow only
has RE2, which differs in three ways that change token ids:

- RE2's `\\s` is ASCII only; Oniguruma's is Unicode White_Space (U+00A0,
  U+3000, U+2028, ...). `WHITESPACE` spells that set out.
- RE2's Unicode tables are older: `LETTER` / `NUMBER` add the Unicode 16
  letters and digits Oniguruma knows, and `DIGIT` adds what Rust's
  `char::is_numeric` (used by HF's `Digits` pre-tokenizer) knows beyond that.
  The lists were measured codepoint by codepoint against tokenizers 0.23.
- RE2 has no look-ahead, and every byte-level pattern ends in `\\s+(?!\\S)|\\s+`:
  a run of whitespace before a word gives up its last character to that word
  (" " + "word") or to a token of its own. We cut each such run before its
  last character first (the `cut` regex below marks the spot), then split
  every cut segment with the pattern minus the look-ahead branch. Within a
  segment no run needs the look-ahead any more, and no match of the full
  pattern crosses a cut, so the pieces are the same.

A pre-tokenizer is a list of stages (JSON-friendly dicts), each applied to
every piece the previous stage made, as HF's `Sequence` does:
`{"type": "digits", "individual": bool}`, `{"type": "prefix_space"}` (a space
before every piece that does not start with one) and
`{"type": "split", "pattern": "gpt2" | "llama3" | "qwen2"}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tensorflow_text as tf_text

from tfllm.errors import DataError

_SPACE_CHARS = (0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
WHITESPACE = (
    r"\t\n\x0B\x0C\r" + "".join(rf"\x{{{c:X}}}" for c in _SPACE_CHARS) + (r"\x{2000}-\x{200A}")
)
WHITESPACE_NO_NEWLINE = (
    r"\t\x0B\x0C" + "".join(rf"\x{{{c:X}}}" for c in _SPACE_CHARS) + (r"\x{2000}-\x{200A}")
)
_EXTRA_LETTERS = (
    (0x1C89, 0x1C8A), (0xA7CB, 0xA7CD), (0xA7DA, 0xA7DC), (0x105C0, 0x105F3),
    (0x10D4A, 0x10D65), (0x10D6F, 0x10D85), (0x10EC2, 0x10EC4), (0x11380, 0x11389),
    (0x1138B, 0x1138B), (0x1138E, 0x1138E), (0x11390, 0x113B5), (0x113B7, 0x113B7),
    (0x113D1, 0x113D1), (0x113D3, 0x113D3), (0x11BC0, 0x11BE0), (0x13460, 0x143FA),
    (0x16100, 0x1611D), (0x16D40, 0x16D6C), (0x18CFF, 0x18CFF), (0x1E5D0, 0x1E5ED),
    (0x1E5F0, 0x1E5F0), (0x2EBF0, 0x2EE5D),
)  # fmt: skip
_EXTRA_NUMBERS = (
    (0x10D40, 0x10D49), (0x116D0, 0x116E3), (0x11BF0, 0x11BF9), (0x16130, 0x16139),
    (0x16D70, 0x16D79), (0x1CCF0, 0x1CCF9), (0x1E5F1, 0x1E5FA),
)  # fmt: skip
_EXTRA_DIGITS = ((0x11DE0, 0x11DE9), (0x16FF4, 0x16FF6))


def _ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in ranges)


LETTER = r"\p{L}" + _ranges(_EXTRA_LETTERS)
NUMBER = r"\p{N}" + _ranges(_EXTRA_NUMBERS)
DIGIT = NUMBER + _ranges(_EXTRA_DIGITS)

W, L, N = WHITESPACE, LETTER, NUMBER
_CONTRACTIONS = "'s|'t|'re|'ve|'m|'ll|'d"
# name -> (HF's pattern, RE2 cut pattern, RE2 pattern without the look-ahead branch).
SPLIT_PATTERNS: dict[str, tuple[str, str, str]] = {
    "gpt2": (
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        rf"([{W}]+)([{W}][^{W}])",
        rf"{_CONTRACTIONS}| ?[{L}]+| ?[{N}]+| ?[^{W}{L}{N}]+|[{W}]+",
    ),
    "llama3": (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        # Newlines end in `\s*[\r\n]+`; only the run after the last one needs the cut.
        rf"([{WHITESPACE_NO_NEWLINE}]+)([{WHITESPACE_NO_NEWLINE}][^{W}])",
        rf"(?i:{_CONTRACTIONS})|[^\r\n{L}{N}]?[{L}]+|[{N}]{{1,3}}"
        rf"| ?[^{W}{L}{N}]+[\r\n]*|[{W}]*[\r\n]+|[{W}]+",
    ),
    "qwen2": (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        rf"([{WHITESPACE_NO_NEWLINE}]+)([{WHITESPACE_NO_NEWLINE}][^{W}])",
        rf"(?i:{_CONTRACTIONS})|[^\r\n{L}{N}]?[{L}]+|[{N}]"
        rf"| ?[^{W}{L}{N}]+[\r\n]*|[{W}]*[\r\n]+|[{W}]+",
    ),
}
# The cut mark: a byte that never occurs in valid UTF-8.
_MARK = b"\xff"


def check_stages(stages: Any) -> list[dict[str, Any]]:
    """Validates stages read back from a file."""
    if not isinstance(stages, list):
        raise DataError("pre_tokenizer stages must be a list")
    for stage in stages:
        kind = stage.get("type") if isinstance(stage, dict) else None
        ok = kind in ("digits", "prefix_space") or (
            kind == "split" and stage.get("pattern") in SPLIT_PATTERNS
        )
        if not ok:
            raise DataError(f"unsupported pre_tokenizer stage {stage!r}")
    return stages


def literal_pattern(tokens: list[str]) -> str:
    """An RE2 alternation matching any token literally, the longest first
    (leftmost-first then gives HF's leftmost-longest match)."""

    def escape(c: str) -> str:
        if c.isascii() and c.isalnum():
            return c
        if c.isascii() and c.isprintable() and c != " ":
            return "\\" + c
        return rf"\x{{{ord(c):X}}}"

    ordered = sorted(set(tokens), key=lambda t: (-len(t), t))
    return "|".join("".join(escape(c) for c in token) for token in ordered)


def interleave_rows(mask: tf.Tensor, true_rows, false_rows):
    """Rows of `true_rows` where mask is True and of `false_rows` elsewhere, in mask order."""
    true_idx = tf.where(mask)[:, 0]
    false_idx = tf.where(tf.logical_not(mask))[:, 0]
    order = tf.math.invert_permutation(tf.concat([true_idx, false_idx], 0))
    return tf.gather(tf.concat([true_rows, false_rows], 0), order)


def _split_text(pieces, ids, split: Callable, lookup: Callable | None):
    """Splits the text pieces (id < 0) with `split`; fixed pieces stay whole.
    `lookup` gives the ids of the new pieces (-1: still text). Returns ragged rows."""
    is_text = ids < 0
    parts = split(tf.boolean_mask(pieces, is_text))
    part_ids = lookup(parts.values) if lookup else -tf.ones_like(parts.values, tf.int64)
    fixed = tf.boolean_mask(pieces, tf.logical_not(is_text))
    fixed_ids = tf.boolean_mask(ids, tf.logical_not(is_text))
    ones = tf.ones_like(fixed_ids)
    return (
        interleave_rows(is_text, parts, tf.RaggedTensor.from_row_lengths(fixed, ones)),
        interleave_rows(
            is_text, parts.with_values(part_ids), tf.RaggedTensor.from_row_lengths(fixed_ids, ones)
        ),
    )


def _regex_split(texts: tf.Tensor, pattern: str) -> tf.RaggedTensor:
    return tf_text.regex_split(texts, pattern, pattern)


def _split_with_cut(texts: tf.Tensor, name: str) -> tf.RaggedTensor:
    _, cut, pattern = SPLIT_PATTERNS[name]
    marked = tf.strings.regex_replace(texts, cut, b"\\1" + _MARK + b"\\2")
    segments = tf.strings.split(marked, sep=_MARK)
    words = _regex_split(segments.values, pattern)
    return tf.RaggedTensor.from_row_splits(
        words.values, tf.gather(words.row_splits, segments.row_splits), validate=False
    )


def pretokenize(
    texts: tf.Tensor,
    literal_groups: list[tuple[str, Any]],
    normalizer: str | None,
    stages: list[dict[str, Any]],
) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """[N] strings -> (words, ids), both ragged [N, None]: ids are an added
    token's id, or -1 for a word still to be byte-pair encoded.

    `literal_groups` is two (RE2 alternation or "", string->id table) pairs:
    the added tokens matched on the raw text, then (after the normalizer) on
    the normalized text, as HF's AddedVocabulary does.
    """
    pieces = tf.RaggedTensor.from_tensor(tf.reshape(texts, [-1, 1]))
    ids = tf.RaggedTensor.from_tensor(-tf.ones([tf.size(texts), 1], tf.int64))

    def apply(pieces, ids, split, lookup=None):
        new_pieces, new_ids = _split_text(pieces.values, ids.values, split, lookup)
        splits = tf.gather(new_pieces.row_splits, pieces.row_splits)
        return (
            tf.RaggedTensor.from_row_splits(new_pieces.values, splits, validate=False),
            tf.RaggedTensor.from_row_splits(new_ids.values, splits, validate=False),
        )

    def mapped(pieces, ids, fn):
        return pieces.with_values(tf.where(ids.values < 0, fn(pieces.values), pieces.values))

    (raw_pattern, raw_table), (norm_pattern, norm_table) = literal_groups
    if raw_pattern:
        pieces, ids = apply(pieces, ids, lambda t: _regex_split(t, raw_pattern), raw_table.lookup)
    if normalizer:
        pieces = mapped(pieces, ids, lambda t: tf_text.normalize_utf8(t, normalizer))
    if norm_pattern:
        pieces, ids = apply(pieces, ids, lambda t: _regex_split(t, norm_pattern), norm_table.lookup)
    for stage in stages:
        kind = stage["type"]
        if kind == "prefix_space":
            pieces = mapped(pieces, ids, lambda t: tf.strings.regex_replace(t, "^([^ ])", " \\1"))
        elif kind == "digits":
            digits = f"[{DIGIT}]" if stage["individual"] else f"[{DIGIT}]+"
            pieces, ids = apply(pieces, ids, lambda t, d=digits: _regex_split(t, d))
        else:
            pieces, ids = apply(pieces, ids, lambda t, s=stage: _split_with_cut(t, s["pattern"]))
    return pieces, ids
