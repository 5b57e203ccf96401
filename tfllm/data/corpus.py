"""Reading corpora: plain text, TSV, CSV and JSON Lines, gzipped or not.

Everything a user can get wrong about a data file (a missing path, an empty or
binary file, bad UTF-8, a missing column) becomes one `DataError` line naming
the file and, where it helps, the line, so the CLI can print it without a
traceback. Bad rows of tsv/csv/jsonl files (a missing field, empty or
over-long text, a broken JSON or CSV line) follow `config.data.on_bad_row`:
"skip" (the default) drops them and summarises them in a single warning,
because real corpora have a few of them and stopping a run for one bad row
helps nobody; "fail" stops at the first one, for data that must be clean.
"""

from __future__ import annotations

import collections
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

from tfllm.config import BAD_ROW_POLICIES, DATA_FORMATS
from tfllm.errors import DataError

FORMATS = DATA_FORMATS
DEFAULT_MAX_ROW_CHARS = 100_000

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
# The csv module's field-size cap (128 KiB by default) is raised well above
# max_row_chars, so an over-long text is reported as such (a bad row) rather
# than as the csv module's own error; the cap must fit in a C long.
_CSV_LIMIT_FLOOR = 1 << 20
_CSV_LIMIT_CEILING = 2**31 - 1
_WARN_LOCATIONS = 3


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


@dataclasses.dataclass(frozen=True)
class _BadRow:
    """One skipped row: where it is and why, for the summary warning."""

    source: str  # "file:line"
    kind: str  # short category, counted in the summary warning
    detail: str  # the full reason, shown for the first rows


class _BadRows:
    """Applies `on_bad_row` to each bad row: raise at once, or remember it for the summary."""

    def __init__(self, policy: str, what: str) -> None:
        self.policy = policy
        self.what = what
        self.rows: list[_BadRow] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, source: str, kind: str, detail: str = "") -> None:
        """Records one bad row; under "fail" raises a one-line DataError naming it."""
        row = _BadRow(source, kind, detail or kind)
        if self.policy == "fail":
            raise DataError(
                f"{self.what}: {row.source}: {row.detail} (config.data.on_bad_row=fail)"
            )
        self.rows.append(row)

    def summary(self) -> str:
        """Counts per kind, most frequent first, e.g. "3 empty text, 1 invalid JSON"."""
        counts = collections.Counter(row.kind for row in self.rows)
        return ", ".join(f"{n} {kind}" for kind, n in counts.most_common())

    def locations(self) -> str:
        """The first few bad rows as "file:line (reason)"."""
        return ", ".join(f"{r.source} ({r.detail})" for r in self.rows[:_WARN_LOCATIONS])


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
    on_bad_row: str = "skip",
    max_row_chars: int = DEFAULT_MAX_ROW_CHARS,
) -> Corpus:
    """Reads every row of every file in `path` into a `Corpus`.

    `fmt` is "text" (each file is one document, newlines kept exactly),
    "tsv"/"csv" (a header line names the columns), or "jsonl" (one object per
    line). Text from tsv/csv/jsonl rows is stripped of surrounding whitespace
    (SST-2 rows end in a space that raw user input at inference will not
    have); labels are returned as stripped strings. `what` (e.g.
    "config.data.train_path") prefixes every error message.

    Bad rows (see `on_bad_row`: "skip" or "fail") are rows with missing fields
    or the wrong number of columns, empty text, text longer than
    `max_row_chars`, or a line the JSON/CSV parser rejects. A "text" file has
    no rows: it is one document of any length (the tokenizer chunks it).
    """
    if fmt not in FORMATS:
        raise DataError(f"{what}: unknown data format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "text" and label_field:
        raise DataError(
            f"{what}: format 'text' has no labels; use tsv, csv or jsonl for label_field"
        )
    if on_bad_row not in BAD_ROW_POLICIES:
        raise DataError(
            f"{what}: unknown bad-row policy {on_bad_row!r}; valid: {', '.join(BAD_ROW_POLICIES)}"
        )
    if isinstance(max_row_chars, bool) or not isinstance(max_row_chars, int) or max_row_chars < 1:
        raise DataError(f"{what}: max_row_chars must be a positive integer, got {max_row_chars!r}")
    corpus = Corpus(texts=[], labels=[] if label_field else None, sources=[])
    bad = _BadRows(on_bad_row, what)
    rows = _RowSink(corpus, bad, bool(label_field), max_row_chars)
    if fmt in ("tsv", "csv"):
        _raise_csv_field_limit(max_row_chars)
    for file in expand_paths(path, what):
        content = _read_text(file, what)
        if fmt == "text":
            corpus.texts.append(content)
            corpus.sources.append(f"{file}:1")
        elif fmt == "jsonl":
            _parse_jsonl(file, content, text_field, label_field, rows)
        else:
            _parse_delimited(file, content, fmt, text_field, label_field, rows, what)
    corpus.skipped = len(bad)
    if not corpus.texts:
        first = bad.rows[0] if bad.rows else None
        detail = f": {bad.summary()}; first at {first.source}: {first.detail}" if first else ""
        raise DataError(f"{what}: no usable rows in {path} ({len(bad)} skipped{detail})")
    if bad.rows:
        logging.warning(
            "%s: skipped %d row(s) (%s), first at %s; set config.data.on_bad_row=fail "
            "to stop at the first bad row instead",
            what,
            len(bad),
            bad.summary(),
            bad.locations(),
        )
    return corpus


def _raise_csv_field_limit(max_row_chars: int) -> None:
    """Lifts the csv module's (process-wide) field cap comfortably above max_row_chars."""
    wanted = min(_CSV_LIMIT_CEILING, max(_CSV_LIMIT_FLOOR, 4 * max_row_chars))
    if csv.field_size_limit() < wanted:
        csv.field_size_limit(wanted)


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


@dataclasses.dataclass
class _RowSink:
    """Where parsed rows go: valid ones into the corpus, bad ones to the policy."""

    corpus: Corpus
    bad: _BadRows
    has_label: bool
    max_row_chars: int

    def add(self, source: str, text: object, label: object) -> None:
        """Appends one row, or hands it to the bad-row policy if its text or label is unusable."""
        if text is None:
            self.bad.add(source, "missing text field")
            return
        if not isinstance(text, str):
            self.bad.add(source, "text not a string", f"text is a {type(text).__name__}")
            return
        if not text.strip():
            self.bad.add(source, "empty text")
            return
        if len(text) > self.max_row_chars:
            self.bad.add(
                source,
                "over-long text",
                f"text of {len(text)} chars exceeds config.data.max_row_chars={self.max_row_chars}",
            )
            return
        if self.has_label:
            if label is None:
                self.bad.add(source, "missing label")
                return
            if isinstance(label, (dict, list)):
                self.bad.add(source, "label not a scalar", f"label is a {type(label).__name__}")
                return
            if not str(label).strip():
                self.bad.add(source, "empty label")
                return
            assert self.corpus.labels is not None
            self.corpus.labels.append(str(label).strip())
        self.corpus.texts.append(text.strip())
        self.corpus.sources.append(source)


def _parse_delimited(
    file: str,
    content: str,
    fmt: str,
    text_field: str,
    label_field: str | None,
    rows: _RowSink,
    what: str,
) -> None:
    """Parses TSV (no quoting: SST-2 sentences contain bare quotes) or CSV rows.

    A row the csv module rejects (e.g. a field over its size cap) is a bad row;
    the reader resumes at the next physical line, so one broken row cannot
    hide the rest of the file. Only a broken header line is fatal.
    """
    if fmt == "tsv":
        reader = csv.reader(
            io.StringIO(content, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE
        )
    else:
        reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise DataError(f"{what}: {file}:1: malformed {fmt.upper()} header ({e})") from None
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
    while True:
        source = f"{file}:{start}"
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            start = reader.line_num + 1
            rows.bad.add(source, f"malformed {fmt.upper()}", f"malformed {fmt.upper()} ({e})")
            continue
        start = reader.line_num + 1
        if not row:
            continue  # Blank line.
        if len(row) != len(header):
            rows.bad.add(
                source,
                "wrong number of fields",
                f"{len(row)} field(s), the header has {len(header)}",
            )
            continue
        label = row[label_i] if label_i is not None else None
        rows.add(source, row[text_i], label)


def _parse_jsonl(
    file: str,
    content: str,
    text_field: str,
    label_field: str | None,
    rows: _RowSink,
) -> None:
    """Parses one JSON object per line; blank lines are ignored."""
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        source = f"{file}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rows.bad.add(source, "invalid JSON", f"invalid JSON ({e.msg})")
            continue
        except RecursionError:
            rows.bad.add(source, "invalid JSON", "invalid JSON (nested too deeply)")
            continue
        if not isinstance(obj, dict):
            rows.bad.add(
                source, "not a JSON object", f"expected a JSON object, got {type(obj).__name__}"
            )
            continue
        label = obj.get(label_field) if label_field else None
        rows.add(source, obj.get(text_field), label)
