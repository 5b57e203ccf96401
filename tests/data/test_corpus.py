"""Tests for tfllm.data.corpus: formats, bundled sets, and one-line errors."""

from __future__ import annotations

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
        read_documents(path, "jsonl")
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
