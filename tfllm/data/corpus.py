"""Reading corpora: plain text, TSV, CSV and JSON Lines, gzipped or not.

Everything a user can get wrong about a data file (a missing path, an empty or
binary file, bad UTF-8, a missing column, a broken JSON line) becomes one
`DataError` line naming the file and, where it helps, the line, so the CLI can
print it without a traceback. Rows that are merely unusable (empty text, a
missing field) are skipped and summarised in a single warning, because real
corpora have a few of them and stopping a run for one bad row helps nobody.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import io
import json
import os
import zlib
from importlib import resources

from absl import logging

from tfllm.errors import DataError

FORMATS = ("text", "tsv", "csv", "jsonl")

# Bundled data sets: name -> {split: path relative to tfllm/data/bundled}.
BUNDLED: dict[str, dict[str, str]] = {
    "shakespeare": {"train": "tinyshakespeare.txt.gz"},
    "sst2": {
        "train": "sst2/train.tsv.gz",
        "dev": "sst2/dev.tsv.gz",
        "test": "sst2/test.tsv.gz",
    },
}

_BINARY_PROBE_BYTES = 8192
_GLOB_CHARS = frozenset("*?[")
# Rows of a CSV may hold whole documents; the csv module's default cap
# (128 KiB per field) would reject them with an unhelpful error.
csv.field_size_limit(2**31 - 1)


@dataclasses.dataclass
class Corpus:
    """Documents read from one or more files.

    `sources[i]` is the "file:line" that `texts[i]` came from, kept so later
    stages (e.g. label parsing) can point at the offending row.
    """

    texts: list[str]
    labels: list[str] | None
    sources: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def bundled_paths(name: str) -> dict[str, str]:
    """Returns split -> absolute path of a bundled data set's gzipped file(s).

    Shakespeare has only "train" (the caller holds out the tail for eval);
    SST-2 has "train", "dev" and "test".
    """
    if name not in BUNDLED:
        raise DataError(
            f"unknown bundled data set {name!r}; valid names: {', '.join(sorted(BUNDLED))}"
        )
    root = resources.files("tfllm.data") / "bundled"
    paths = {}
    for split, rel in BUNDLED[name].items():
        path = os.path.abspath(str(root.joinpath(*rel.split("/"))))
        if not os.path.isfile(path):
            raise DataError(
                f"bundled data set {name!r}: file missing from the installed package: {path}"
            )
        paths[split] = path
    return paths


def expand_paths(path: str, what: str = "path") -> list[str]:
    """Expands a file, a glob, or a comma-separated list of them, in order.

    Globs are sorted so the document order (and so the token stream and any
    held-out tail) is the same on every machine.
    """
    parts = [p.strip() for p in str(path).split(",") if p.strip()]
    if not parts:
        raise DataError(f"{what}: no path given")
    files: list[str] = []
    for part in parts:
        expanded = os.path.expanduser(part)
        if _GLOB_CHARS & set(expanded):
            matches = sorted(m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m))
            if not matches:
                raise DataError(f"{what}: no file matches pattern: {part}")
            files.extend(matches)
        elif os.path.isdir(expanded):
            raise DataError(f"{what}: is a directory, expected a file or glob: {part}")
        elif not os.path.isfile(expanded):
            raise DataError(f"{what}: no such file: {part}")
        else:
            files.append(expanded)
    return files


def read_documents(
    path: str,
    fmt: str,
    text_field: str = "text",
    label_field: str | None = None,
    what: str = "path",
) -> Corpus:
    """Reads every row of every file in `path` into a `Corpus`.

    `fmt` is "text" (each file is one document, newlines kept exactly),
    "tsv"/"csv" (a header line names the columns), or "jsonl" (one object per
    line). Text from tsv/csv/jsonl rows is stripped of surrounding whitespace
    (SST-2 rows end in a space that raw user input at inference will not
    have); labels are returned as stripped strings. `what` (e.g.
    "config.data.train_path") prefixes every error message.
    """
    if fmt not in FORMATS:
        raise DataError(f"{what}: unknown data format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "text" and label_field:
        raise DataError(
            f"{what}: format 'text' has no labels; use tsv, csv or jsonl for label_field"
        )
    corpus = Corpus(texts=[], labels=[] if label_field else None, sources=[])
    bad: list[str] = []
    for file in expand_paths(path, what):
        content = _read_text(file, what)
        if fmt == "text":
            corpus.texts.append(content)
            corpus.sources.append(f"{file}:1")
        elif fmt == "jsonl":
            _parse_jsonl(file, content, text_field, label_field, corpus, bad, what)
        else:
            _parse_delimited(file, content, fmt, text_field, label_field, corpus, bad, what)
    corpus.skipped = len(bad)
    if not corpus.texts:
        first = f", first at {bad[0]}" if bad else ""
        raise DataError(
            f"{what}: no usable rows in {path} ({len(bad)} skipped for empty text or "
            f"missing fields{first})"
        )
    if bad:
        logging.warning(
            "%s: skipped %d row(s) with empty text or missing fields, e.g. at %s",
            what,
            len(bad),
            ", ".join(bad[:3]),
        )
    return corpus


def _read_text(file: str, what: str) -> str:
    """Reads a whole (possibly gzipped) file as UTF-8, rejecting empty and binary files."""
    try:
        if file.endswith(".gz"):
            with gzip.open(file, "rb") as f:
                data = f.read()
        else:
            with open(file, "rb") as f:
                data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{what}: {file}: not a valid gzip file ({e})") from None
    except OSError as e:
        raise DataError(f"{what}: {file}: cannot read ({e.strerror or e})") from None
    if b"\0" in data[:_BINARY_PROBE_BYTES]:
        raise DataError(
            f"{what}: {file}: looks like a binary file (NUL bytes), expected UTF-8 text"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{what}: {file}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); "
            "re-encode the file as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")  # A BOM is encoding metadata, not text.
    if not text.strip():
        raise DataError(f"{what}: {file}: file is empty")
    return text


def _add_row(
    corpus: Corpus, bad: list[str], source: str, text: object, label: object, has_label: bool
) -> None:
    """Appends one row, or records it as skipped if its text or label is unusable."""
    if not isinstance(text, str) or not text.strip():
        bad.append(source)
        return
    if has_label:
        if label is None or isinstance(label, (dict, list)) or not str(label).strip():
            bad.append(source)
            return
        assert corpus.labels is not None
        corpus.labels.append(str(label).strip())
    corpus.texts.append(text.strip())
    corpus.sources.append(source)


def _parse_delimited(
    file: str,
    content: str,
    fmt: str,
    text_field: str,
    label_field: str | None,
    corpus: Corpus,
    bad: list[str],
    what: str,
) -> None:
    """Parses TSV (no quoting: SST-2 sentences contain bare quotes) or CSV rows."""
    if fmt == "tsv":
        reader = csv.reader(
            io.StringIO(content, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE
        )
    else:
        reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        columns = {name: i for i, name in reversed(list(enumerate(header)))}
        for field in (text_field, label_field):
            if field and field not in columns:
                raise DataError(
                    f"{what}: {file}:1: header has no column {field!r} "
                    f"(columns: {', '.join(repr(h) for h in header)})"
                )
        text_i = columns[text_field]
        label_i = columns[label_field] if label_field else None
        start = reader.line_num + 1
        for row in reader:
            source = f"{file}:{start}"
            start = reader.line_num + 1
            if not row:
                continue  # Blank line.
            if len(row) != len(header):
                bad.append(source)
                continue
            label = row[label_i] if label_i is not None else None
            _add_row(corpus, bad, source, row[text_i], label, label_i is not None)
    except csv.Error as e:
        raise DataError(
            f"{what}: {file}:{reader.line_num}: malformed {fmt.upper()} ({e})"
        ) from None


def _parse_jsonl(
    file: str,
    content: str,
    text_field: str,
    label_field: str | None,
    corpus: Corpus,
    bad: list[str],
    what: str,
) -> None:
    """Parses one JSON object per line; blank lines are ignored."""
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{what}: {file}:{number}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{what}: {file}:{number}: expected a JSON object, got {type(obj).__name__}"
            )
        label = obj.get(label_field) if label_field else None
        _add_row(corpus, bad, f"{file}:{number}", obj.get(text_field), label, bool(label_field))
