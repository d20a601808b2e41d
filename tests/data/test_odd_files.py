"""Odd local files end in one ConfigError naming the field and the file, before any token is
made: a damaged Parquet file, a text field that is not a string, binary or non-UTF-8 text, a
directory given as a file. The same for a loaded split and a stream."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dprope.config import ConfigError
from dprope.data import build_train_dataset, data_config

TEXTS = ["first document " * 40, "second document " * 40, "third document " * 40]


def local_cfg(tmp_path, paths, streaming=False):
    return data_config(
        {"name": "local", "source": "files", "paths": {"train": [str(p) for p in paths]}, "max_length": 64,
         "num_proc": 1, "batch_size": 2, "cache_dir": str(tmp_path / "cache"), "streaming": streaming}
    )  # fmt: skip


def build_error(tmp_path, byte_tokenizer, *paths, streaming=False) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        build_train_dataset(local_cfg(tmp_path, paths, streaming), byte_tokenizer, "byte", 4, None)
    assert "\n" not in str(err.value)
    return err.value


@pytest.fixture
def parquet_bytes(tmp_path) -> bytes:
    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "good.parquet")
    return (tmp_path / "good.parquet").read_bytes()


@pytest.mark.parametrize("streaming", [False, True])
def test_damaged_parquet_files_are_named(tmp_path, byte_tokenizer, no_tokenizing, parquet_bytes, streaming):
    cut = tmp_path / "cut.parquet"  # a partial download: no footer
    cut.write_bytes(parquet_bytes[: len(parquet_bytes) // 2])
    short = tmp_path / "short.parquet"  # the footer intact, data missing before it
    short.write_bytes(parquet_bytes[:100] + parquet_bytes[-60:])
    pages = bytearray(parquet_bytes)  # the footer intact, the first page header overwritten
    pages[4:60] = b"\x55" * 56
    (tmp_path / "pages.parquet").write_bytes(bytes(pages))
    for name in ("cut.parquet", "short.parquet", "pages.parquet"):
        path = tmp_path / name
        # every footer is read up front; a stream reads pages only as it goes (its first file here)
        files = (
            [path, tmp_path / "good.parquet"]
            if streaming and name == "pages.parquet"
            else [tmp_path / "good.parquet", path]
        )
        err = build_error(tmp_path, byte_tokenizer, *files, streaming=streaming)
        assert err.field == "data.paths" and str(err).startswith(f"data.paths: {path}: "), str(err)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_text_field_that_is_not_a_string(tmp_path, byte_tokenizer, no_tokenizing, streaming):
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text("".join(json.dumps({"text": n}) + "\n" for n in (1, 2)))
    mixed = tmp_path / "mixed.jsonl"  # a string first, then an object
    mixed.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": {"body": "x"}}) + "\n")
    expected = {
        numbers: "int64 values" if streaming else "row 0 holds int 1",
        mixed: "JSON values of several types" if streaming else 'row 1 holds dict {"body": "x"}',
    }
    for path, detail in expected.items():
        err = build_error(tmp_path, byte_tokenizer, path, streaming=streaming)
        assert err.field == "data.text_field", str(err)
        assert str(err) == f"data.text_field: 'text' of the json files must hold strings ({detail})"


def test_a_missing_text_is_named_by_its_row(tmp_path, byte_tokenizer, no_tokenizing):
    path = tmp_path / "gaps.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("a", "b", None)))
    err = build_error(tmp_path, byte_tokenizer, path)
    assert str(err) == "data.text_field: 'text' of the json files is missing in row 2 (null)"


@pytest.mark.parametrize("streaming", [False, True])
def test_binary_and_non_utf8_files_are_named(tmp_path, byte_tokenizer, no_tokenizing, streaming):
    (tmp_path / "good.txt").write_text(TEXTS[0])
    cases = {
        "image.txt": (b"\x89PNG\r\n\x1a\n" + bytes(64), "not UTF-8 text (byte 0x89 at offset 0)"),
        "zeros.txt": (b"text then " + bytes(8), "a binary file (NUL byte at offset 10), not text"),
        "latin1.txt": ("café au lait".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 3)"),
        "latin1.jsonl": (b'{"text": "caf\xe9"}\n', "not UTF-8 text (byte 0xe9 at offset 13)"),
    }
    for name, (data, problem) in cases.items():
        (tmp_path / name).write_bytes(data)
        err = build_error(
            tmp_path, byte_tokenizer, tmp_path / "good.txt", tmp_path / name, streaming=streaming
        )
        assert str(err) == f"data.paths: {tmp_path / name}: {problem}"


def test_a_bad_byte_deep_in_a_loaded_file_is_found_before_tokenizing(tmp_path, byte_tokenizer, no_tokenizing):
    path = tmp_path / "long.txt"  # far beyond the head a stream checks up front
    path.write_bytes(b"x" * 200_000 + b"\xff")
    err = build_error(tmp_path, byte_tokenizer, path)
    assert str(err) == f"data.paths: {path}: not UTF-8 text (byte 0xff at offset 200000)"


def test_a_directory_given_as_a_file_says_so(tmp_path, byte_tokenizer, no_tokenizing):
    corpus = tmp_path / "corpus"
    (corpus / "nested.txt").mkdir(parents=True)  # a directory whose name a glob matches
    (corpus / "a.txt").write_text(TEXTS[0])
    err = build_error(tmp_path, byte_tokenizer, corpus)
    assert str(err) == f"data.paths: {corpus} is a directory, not a file (list its files: '{corpus}/*.txt')"
    err = build_error(tmp_path, byte_tokenizer, corpus / "*.txt")
    assert str(err) == f"data.paths: {corpus / 'nested.txt'} is a directory, not a file"
