"""Text pieces of a continuation as its tokens arrive (streaming output).

Decoding token by token does not work for every tokenizer: a byte-level BPE
token may end inside a UTF-8 character, and SentencePiece decides about a
word's leading space from its neighbours. So each piece is the difference
between the decoding of all tokens so far and what was already sent, holding
back a trailing U+FFFD (an unfinished character) until it is complete; the
last piece (`finish`) completes the decoding of all tokens at once, which is
the text `tfllm-generate` prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfllm.data.tokenizer_kinds import AnyTokenizer


class TextStream:
    """One continuation's tokens so far and the text already handed out."""

    def __init__(self, tokenizer: AnyTokenizer) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.sent = ""

    def delta(self, new: Sequence[int]) -> str:
        """The text the `new` tokens add (may be empty)."""
        self.tokens.extend(int(t) for t in new)
        text = self.tokenizer.decode(self.tokens).rstrip("\ufffd")
        if not text.startswith(self.sent):
            return ""  # not prefix-stable here: `finish` hands out the whole text
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def finish(self) -> tuple[str, str]:
        """`(last piece, whole text)`: the pieces sent so far plus the last add up to
        the whole text whenever the decoding was prefix-stable."""
        text = self.tokenizer.decode(self.tokens)
        last = text[len(self.sent) :] if text.startswith(self.sent) else ""
        self.sent = text
        return last, text
