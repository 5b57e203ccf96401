"""Tests for tfllm.data.corpus: formats, bundled sets, and one-line errors."""

from __future__ import annotations

import csv
import gzip
import os

import pytest

from tfllm.data import corpus
from tfllm.data.corpus import bundled_paths, read_documents
from tfllm.errors import DataError


def _write(path, data: str | bytes) -> str:
    mode = "wb" if isinstance(data, bytes) else "w"
    kwargs = {} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""}
    with open(path, mode, **kwargs) as f:
        f.write(data)
    return str(path)


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- bundled data -----------------------------------------------------------


def test_bundled_shakespeare_loads_exactly():
    paths = bundled_paths("shakespeare")
    assert list(paths) == ["train"]
    assert os.path.isabs(paths["train"]) and paths["train"].endswith(".gz")
    docs = read_documents(paths["train"], "text")
    assert len(docs.texts) == 1 and docs.labels is None and docs.skipped == 0
    text = docs.texts[0]
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert text.count("\n") == 40_000


def test_bundled_sst2_loads():
    paths = bundled_paths("sst2")
    assert sorted(paths) == ["dev", "test", "train"]
    sizes = {"train": 60_614, "dev": 6_735, "test": 872}
    for split, size in sizes.items():
        docs = read_documents(paths[split], "tsv", text_field="sentence", label_field="label")
        assert len(docs.texts) == size, split
        assert docs.skipped == 0
        assert set(docs.labels) == {"0", "1"}
        assert len(docs.sources) == size
    test = read_documents(paths["test"], "tsv", text_field="sentence", label_field="label")
    assert test.labels.count("0") == 428 and test.labels.count("1") == 444
    assert test.sources[0] == f"{paths['test']}:2"


def test_bundled_unknown_name_lists_valid_names():
    with pytest.raises(DataError) as e:
        bundled_paths("imdb")
    message = _one_line_error(e)
    assert "'imdb'" in message and "shakespeare" in message and "sst2" in message


# --- formats ------------------------------------------------------------------


def test_text_keeps_newlines_and_reads_gzip_globs_and_lists(tmp_path):
    a = _write(tmp_path / "a.txt", "  one\n\ntwo\t \n")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("gz ü\r\nend")
    c = _write(tmp_path / "c.md", "third")
    docs = read_documents(f"{tmp_path}/*.txt*, {c}", "text")
    assert docs.texts == ["  one\n\ntwo\t \n", "gz ü\r\nend", "third"]
    assert docs.sources == [f"{a}:1", f"{tmp_path}/b.txt.gz:1", f"{c}:1"]


def test_tsv_keeps_quotes_and_skips_bad_rows(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(corpus.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    path = _write(
        tmp_path / "d.tsv",
        'sentence\tlabel\n"quoted" it \'s\t1\n   \t0\nno label column\n\nok\t pos \n',
    )
    docs = read_documents(path, "tsv", "sentence", "label", what="config.data.train_path")
    assert docs.texts == ['"quoted" it \'s', "ok"]
    assert docs.labels == ["1", "pos"]
    assert docs.sources == [f"{path}:2", f"{path}:6"]
    assert docs.skipped == 2
    assert len(warnings) == 1
    assert (
        "skipped 2 row(s)" in warnings[0]
        and f"{path}:3" in warnings[0]
        and f"{path}:4" in warnings[0]
    )
    assert warnings[0].startswith("config.data.train_path")


def test_csv_quoting_and_multiline_fields(tmp_path):
    path = _write(
        tmp_path / "d.csv", 'id,text,label\n1,"hello, world",a\n2,"two\nlines ""q""",b\n3,x,c\n'
    )
    docs = read_documents(path, "csv", label_field="label")
    assert docs.texts == ["hello, world", 'two\nlines "q"', "x"]
    assert docs.labels == ["a", "b", "c"]
    assert docs.sources == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_jsonl_fields_blank_lines_and_int_labels(tmp_path):
    path = _write(
        tmp_path / "d.jsonl",
        '{"text": "héllo", "label": 1}\n\n{"text": "", "label": 0}\n'
        '{"label": 2}\n{"text": "b", "label": "neg "}\n',
    )
    docs = read_documents(path, "jsonl", label_field="label")
    assert docs.texts == ["héllo", "b"]
    assert docs.labels == ["1", "neg"]
    assert docs.sources == [f"{path}:1", f"{path}:5"]
    assert docs.skipped == 2


# --- errors -----------------------------------------------------------------------


def test_missing_file_and_empty_glob(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(DataError) as e:
        read_documents(missing, "text", what="config.data.train_path")
    assert _one_line_error(e) == f"config.data.train_path: no such file: {missing}"
    with pytest.raises(DataError) as e:
        read_documents(str(tmp_path / "*.jsonl"), "jsonl")
    assert "no file matches pattern" in _one_line_error(e) and "*.jsonl" in str(e.value)


def test_empty_file(tmp_path):
    path = _write(tmp_path / "empty.txt", "")
    with pytest.raises(DataError) as e:
        read_documents(path, "text")
    assert path in _one_line_error(e) and "empty" in str(e.value)


def test_binary_file(tmp_path):
    path = _write(tmp_path / "model.bin", b"abc\x00\x01\x02" * 10)
    with pytest.raises(DataError) as e:
        read_documents(path, "text")
    assert path in _one_line_error(e) and "binary" in str(e.value)


def test_non_utf8_names_line(tmp_path):
    path = _write(tmp_path / "latin1.tsv", "text\tlabel\nok\t1\ncaf\xe9\t0\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_documents(path, "tsv", label_field="label")
    assert f"{path}:3" in _one_line_error(e) and "UTF-8" in str(e.value)


def test_csv_missing_column_lists_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "sentence,label\nhi,1\n")
    with pytest.raises(DataError) as e:
        read_documents(path, "csv", text_field="text", label_field="label")
    message = _one_line_error(e)
    assert path in message and "'text'" in message and "'sentence', 'label'" in message


def test_bad_json_line_and_non_object(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "a"}\n{"text": "b",}\n')
    with pytest.raises(DataError) as e:
        read_documents(path, "jsonl", on_bad_row="fail")
    assert f"{path}:2" in _one_line_error(e) and "invalid JSON" in str(e.value)
    path = _write(tmp_path / "e.jsonl", '["text", "a"]\n')
    with pytest.raises(DataError) as e:
        read_documents(path, "jsonl")
    assert f"{path}:1" in _one_line_error(e) and "list" in str(e.value)


def test_all_rows_skipped(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"title": "a"}\n{"text": "  "}\n')
    with pytest.raises(DataError) as e:
        read_documents(path, "jsonl")
    assert "no usable rows" in _one_line_error(e) and f"{path}:1" in str(e.value)


def test_unknown_format_and_bad_gzip(tmp_path):
    path = _write(tmp_path / "d.txt", "x")
    with pytest.raises(DataError, match="unknown data format 'parquet'"):
        read_documents(path, "parquet")
    bad = _write(tmp_path / "d.txt.gz", b"not gzip at all")
    with pytest.raises(DataError) as e:
        read_documents(bad, "text")
    assert bad in _one_line_error(e) and "gzip" in str(e.value)


# --- bad rows: config.data.on_bad_row / max_row_chars ------------------------------

_GOOD_1, _GOOD_2 = "first good", "second good"

# (format, bad line, reason in the message); each bad line sits on line 3, between
# two good rows, with a header on line 1 for tsv/csv.
_BAD_ROWS = [
    ("tsv", "only one field", "1 field(s), the header has 2"),
    ("tsv", "a\tb\tc", "3 field(s), the header has 2"),
    ("tsv", " \t1", "empty text"),
    ("tsv", "hi\t ", "empty label"),
    ("tsv", "x" * 50 + "\t1", "text of 50 chars exceeds config.data.max_row_chars=20"),
    ("csv", "only one field", "1 field(s), the header has 2"),
    ("csv", '"  ",1', "empty text"),
    ("csv", "hi,", "empty label"),
    ("csv", '"' + "y" * 30 + '",1', "text of 30 chars exceeds config.data.max_row_chars=20"),
    ("jsonl", '{"text": "b",}', "invalid JSON (Expecting property name"),
    ("jsonl", '["text", "a"]', "expected a JSON object, got list"),
    ("jsonl", '{"title": "a", "label": 1}', "missing text field"),
    ("jsonl", '{"text": 5, "label": 1}', "text is a int"),
    ("jsonl", '{"text": "\\t ", "label": 1}', "empty text"),
    ("jsonl", '{"text": "a"}', "missing label"),
    ("jsonl", '{"text": "a", "label": [1]}', "label is a list"),
    ("jsonl", '{"text": "' + "z" * 21 + '", "label": 1}', "text of 21 chars exceeds"),
]


def _rows_file(tmp_path, fmt: str, bad_line: str) -> str:
    """A file whose line 3 is `bad_line`, between two valid rows labelled 1 and 0."""
    if fmt == "jsonl":
        lines = [f'{{"text": "{_GOOD_1}", "label": 1}}', "", bad_line]
        lines.append(f'{{"text": "{_GOOD_2}", "label": 0}}')
    else:
        sep = "\t" if fmt == "tsv" else ","
        lines = [f"text{sep}label", f"{_GOOD_1}{sep}1", bad_line, f"{_GOOD_2}{sep}0"]
    return _write(tmp_path / f"d.{fmt}", "\n".join(lines) + "\n")


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    """Formatted messages of every absl warning the corpus module logs."""
    logged: list[str] = []
    monkeypatch.setattr(corpus.logging, "warning", lambda *a: logged.append(a[0] % a[1:]))
    return logged


@pytest.mark.parametrize(("fmt", "bad_line", "reason"), _BAD_ROWS)
def test_bad_row_is_skipped_with_one_warning(tmp_path, warnings, fmt, bad_line, reason):
    path = _rows_file(tmp_path, fmt, bad_line)
    docs = read_documents(
        path, fmt, label_field="label", what="config.data.train_path", max_row_chars=20
    )
    assert docs.texts == [_GOOD_1, _GOOD_2]
    assert docs.labels == ["1", "0"]
    good_lines = (1, 4) if fmt == "jsonl" else (2, 4)
    assert docs.sources == [f"{path}:{good_lines[0]}", f"{path}:{good_lines[1]}"]
    assert docs.skipped == 1
    assert len(warnings) == 1
    message = warnings[0]
    assert message.startswith("config.data.train_path: skipped 1 row(s)"), message
    assert f"{path}:3 ({reason}" in message and "on_bad_row=fail" in message


@pytest.mark.parametrize(("fmt", "bad_line", "reason"), _BAD_ROWS)
def test_bad_row_fails_under_fail_policy(tmp_path, warnings, fmt, bad_line, reason):
    path = _rows_file(tmp_path, fmt, bad_line)
    with pytest.raises(DataError) as e:
        read_documents(
            path,
            fmt,
            label_field="label",
            what="config.data.train_path",
            on_bad_row="fail",
            max_row_chars=20,
        )
    message = _one_line_error(e)
    assert message.startswith(f"config.data.train_path: {path}:3: {reason}"), message
    assert message.endswith("(config.data.on_bad_row=fail)")
    assert warnings == []


def test_warning_counts_reasons_and_names_first_three(tmp_path, warnings):
    a = _write(tmp_path / "a.tsv", "text\tlabel\nkeep 1\t1\n\t0\nno tab\nkeep 2\t0\n \t1\n")
    b = _write(tmp_path / "b.tsv", "text\tlabel\nx\ty\tz\nkeep 3\t1\n")
    docs = read_documents(f"{a},{b}", "tsv", label_field="label", what="--data")
    assert docs.texts == ["keep 1", "keep 2", "keep 3"]
    assert docs.labels == ["1", "0", "1"]
    assert docs.sources == [f"{a}:2", f"{a}:5", f"{b}:3"]
    assert docs.skipped == 4
    (message,) = warnings
    assert message.startswith("--data: skipped 4 row(s) (2 empty text, 2 wrong number of fields)")
    assert f"{a}:3 (empty text), {a}:4 (1 field(s), the header has 2), {a}:6 (empty text);" in (
        message
    )
    assert f"{b}:2" not in message  # only the first three locations


def test_all_rows_bad_names_reason_and_first_row(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\n,1\nonly\n")
    with pytest.raises(DataError) as e:
        read_documents(path, "csv", label_field="label")
    message = _one_line_error(e)
    assert "no usable rows" in message and "2 skipped: 1 empty text, 1 wrong number" in message
    assert f"first at {path}:2: empty text" in message


def test_unknown_policy_and_bad_max_row_chars(tmp_path):
    path = _write(tmp_path / "d.tsv", "text\nok\n")
    with pytest.raises(DataError, match="unknown bad-row policy 'ignore'"):
        read_documents(path, "tsv", on_bad_row="ignore")
    with pytest.raises(DataError, match="max_row_chars must be a positive integer"):
        read_documents(path, "tsv", max_row_chars=0)


def test_text_format_has_no_row_limit(tmp_path):
    path = _write(tmp_path / "long.txt", "w" * 500 + "\n")
    docs = read_documents(path, "text", on_bad_row="fail", max_row_chars=10)
    assert docs.texts == ["w" * 500 + "\n"] and docs.skipped == 0


@pytest.fixture
def default_csv_limit():
    """Puts the csv module's field cap back to its 128 KiB default for one test."""
    before = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(before)


def test_csv_text_over_module_default_limit_does_not_crash(tmp_path, warnings, default_csv_limit):
    big = "b" * 200_000
    path = _write(tmp_path / "d.csv", f'text,label\nsmall,1\n"{big}",0\nafter,1\n')
    docs = read_documents(path, "csv", label_field="label")
    assert docs.texts == ["small", "after"] and docs.sources == [f"{path}:2", f"{path}:4"]
    assert (
        f"{path}:3 (text of 200000 chars exceeds config.data.max_row_chars=100000)" in (warnings[0])
    )
    docs = read_documents(path, "csv", label_field="label", max_row_chars=300_000)
    assert docs.texts == ["small", big, "after"]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_field_over_csv_module_limit_is_a_bad_row(tmp_path, warnings, default_csv_limit, fmt):
    # max_row_chars=10 lifts the cap to its 1 MiB floor; a longer non-text field
    # trips the csv module itself, which must become a bad row, not a traceback.
    sep = "\t" if fmt == "tsv" else ","
    huge = "h" * (corpus._CSV_LIMIT_FLOOR + 10)
    content = f"id{sep}text\n1{sep}one\n{huge}{sep}two\n3{sep}three\n"
    path = _write(tmp_path / f"d.{fmt}", content)
    docs = read_documents(path, fmt, max_row_chars=10)
    assert docs.texts == ["one", "three"] and docs.sources == [f"{path}:2", f"{path}:4"]
    assert f"{path}:3 (malformed {fmt.upper()} (field larger than field limit" in warnings[0]
    with pytest.raises(DataError) as e:
        read_documents(path, fmt, on_bad_row="fail", max_row_chars=10)
    message = _one_line_error(e)
    assert f"{path}:3: malformed {fmt.upper()} (field larger than field limit" in message
    assert message.endswith("(config.data.on_bad_row=fail)")


def test_csv_header_over_module_limit_is_one_line_error(tmp_path, default_csv_limit):
    path = _write(tmp_path / "d.csv", "h" * (corpus._CSV_LIMIT_FLOOR + 10) + ",text\n1,a\n")
    with pytest.raises(DataError) as e:
        read_documents(path, "csv", max_row_chars=10)
    assert f"{path}:1: malformed CSV header" in _one_line_error(e)
