"""Prompt files in, completion files out, for `tfllm-generate --input_file`.

Input, chosen by the file's extension:

- `.jsonl`: one JSON object per line with a string field `prompt`; blank
  lines are skipped. The only way to give an empty prompt (start a new
  document) or one spanning several lines.
- anything else: plain UTF-8 text, one prompt per line, taken verbatim
  (only the line break is removed). Blank lines are skipped: a trailing
  newline or a spacer line should not cost a generation.

Lines end at "\n" (or "\r\n") only, in both formats: `str.splitlines` also
breaks at form feeds, U+2028 and other Unicode separators, which are text
(and which JSON writes unescaped), so one line became several prompts with
shifted line numbers. A leading BOM is encoding metadata and is dropped.

Output: JSON Lines, one object per prompt in input order (`RESULT_FIELDS`),
written to a temporary file beside the target and renamed over it, so a
reader sees the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tfllm.errors import DataError
from tfllm.utils.io import atomic_write_text

# What every output line holds (docs/generation.md documents each).
RESULT_FIELDS = (
    "index",  # 0-based position among the prompts (blank lines not counted)
    "line",  # 1-based line of the input file
    "prompt",  # the prompt text as read
    "completion",  # the generated text, cut before end-of-document
    "prompt_tokens",  # prompt tokens the model saw (after left truncation)
    "tokens",  # tokens in the completion
    "finish",  # "eos" (end-of-document) or "length" (max_new_tokens reached)
    "seed",  # this prompt's sampling seed: --seed + index
)


@dataclass
class Prompt:
    index: int
    line: int
    text: str


def read_prompts(path: str, what: str = "--input_file") -> list[Prompt]:
    """The prompts of `path` (format by extension, module doc); raises DataError naming `what`."""
    if not os.path.exists(path):
        raise DataError(f"{what}: no such file: {path}")
    if os.path.isdir(path):
        raise DataError(f"{what}: {path} is a directory, not a file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{what}: {path} is not UTF-8 text (byte {e.start})") from None
    jsonl = path.endswith(".jsonl")
    prompts: list[Prompt] = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        if jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{what}: {path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise DataError(
                    f"{what}: {path}:{number}: expected an object with a string 'prompt' field"
                )
            line = row["prompt"]
        prompts.append(Prompt(len(prompts), number, line))
    if not prompts:
        raise DataError(f"{what}: {path} has no prompts (it is empty or only blank lines)")
    return prompts


def _lines(text: str) -> list[str]:
    """The lines of `text`, split at "\n" or "\r\n" only (module doc), without a BOM."""
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [line.removesuffix("\r") for line in lines]


def check_output_path(path: str, what: str = "--output_file") -> None:
    """Fails early (before any model loads) if `path` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise DataError(f"{what}: {path} is a directory")
    if not os.path.isdir(directory):
        raise DataError(f"{what}: no such directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError(f"{what}: cannot write in {directory} (permission denied)")


def write_results(path: str, rows: list[dict]) -> None:
    """JSON Lines, atomically (`tfllm.utils.io.atomic_write_text`: temp file, then rename)."""

    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
