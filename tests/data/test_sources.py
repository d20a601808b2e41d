"""Sources through `datasets`: a PG19-shaped parquet repository, local files, and every bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from dprope.cli import compose_config
from dprope.config import ConfigError
from dprope.data import build_train_dataset, data_config, eval_documents
from dprope.data.embedded import embedded_files
from dprope.data.tokenizer import encode_texts
from tests.data.conftest import split_documents, unpack

BOOKS = {"train": 6, "validation": 2, "test": 3}


def real_texts(count: int, skip: int = 0) -> list[str]:
    return [Path(p).read_text() for p in embedded_files("train")[skip : skip + count]]


@pytest.fixture
def pg19_repo(tmp_path) -> Path:
    """A local directory laid out like a hub parquet mirror of PG19 (data/<split>-00000-of-00001.parquet)."""
    root = tmp_path / "pg19"
    (root / "data").mkdir(parents=True)
    skip = 0
    for split, count in BOOKS.items():
        texts = real_texts(count, skip)
        skip += count
        table = pa.table(
            {
                "short_book_title": [f"Book {skip + i}" for i in range(count)],
                "publication_date": [1900 + i for i in range(count)],
                "url": [f"http://www.gutenberg.org/ebooks/{skip + i}" for i in range(count)],
                "text": texts,
            }
        )
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def pg19_cfg(repo: Path, tmp_path: Path, **changes):
    plain = OmegaConf.to_container(compose_config("evaluate", ["data=pg19"]).data)
    plain.update(
        hub_id=str(repo), max_length=256, batch_size=2, num_proc=1, cache_dir=str(tmp_path / "cache")
    )
    return dataclasses.replace(data_config(plain), **changes)


def test_pg19_preset_reads_a_parquet_mirror(pg19_repo, tmp_path, byte_tokenizer, monkeypatch):
    monkeypatch.setattr(
        "datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN", 0
    )  # a 5 s pause after parquet streams
    cfg = pg19_cfg(pg19_repo, tmp_path, drop_tail=False)
    dataset = build_train_dataset(cfg, byte_tokenizer, "byte", None, 512)
    documents = split_documents(*unpack([dataset[i] for i in range(len(dataset))], cfg.max_length))
    books = [[1] + ids + [2] for ids in encode_texts(byte_tokenizer, real_texts(BOOKS["train"]))]
    assert sorted(documents) == sorted(books)
    assert build_train_dataset(cfg, byte_tokenizer, "byte", None, 512).from_cache
    test_books = list(eval_documents(cfg, byte_tokenizer, "test"))
    assert len(test_books) == BOOKS["test"] and all(book[0] == 1 and book[-1] != 2 for book in test_books)
    streamed = dataclasses.replace(cfg, streaming=True)
    assert len(list(build_train_dataset(streamed, byte_tokenizer, "byte", None, 512))) == len(dataset)


def test_pg19_unknown_split_and_missing_repository(pg19_repo, tmp_path, byte_tokenizer, no_tokenizing):
    cfg = pg19_cfg(pg19_repo, tmp_path, train_split="training")
    with pytest.raises(ConfigError, match=r"^data\.train_split: "):
        build_train_dataset(cfg, byte_tokenizer, "byte", None, None)
    with pytest.raises(ConfigError, match=r"^data\.hub_id: cannot load"):
        build_train_dataset(pg19_cfg(tmp_path / "nowhere", tmp_path), byte_tokenizer, "byte", None, None)


def write_local_files(root: Path) -> dict[str, list[str]]:
    texts = real_texts(5)
    (root / "txt").mkdir(parents=True)
    for i, text in enumerate(texts[:2]):
        (root / "txt" / f"doc{i}.txt").write_text(text)
    with open(root / "more.jsonl", "w") as f:
        f.write(
            json.dumps({"text": texts[2], "id": 2}) + "\n" + json.dumps({"text": texts[3], "id": 3}) + "\n"
        )
    pq.write_table(pa.table({"text": texts[4:]}), root / "last.parquet")
    return {"train": [str(root / "txt" / "*.txt"), str(root / "more.jsonl"), str(root / "last.parquet")]}


def local_cfg(tmp_path, paths, **changes):
    return data_config(
        {"name": "local", "source": "files", "paths": paths, "max_length": 128, "num_proc": 1,
         "batch_size": 2, "cache_dir": str(tmp_path / "cache"), **changes}
    )  # fmt: skip


def test_local_txt_jsonl_and_parquet(tmp_path, byte_tokenizer):
    cfg = local_cfg(tmp_path, write_local_files(tmp_path / "corpus"), drop_tail=False)
    dataset = build_train_dataset(cfg, byte_tokenizer, "byte", None, None)
    documents = split_documents(*unpack([dataset[i] for i in range(len(dataset))], cfg.max_length))
    assert sorted(documents) == sorted([1] + ids + [2] for ids in encode_texts(byte_tokenizer, real_texts(5)))


def test_a_changed_file_rebuilds(tmp_path, byte_tokenizer):
    (tmp_path / "a.txt").write_text("first version of the text")
    cfg = local_cfg(tmp_path, {"train": [str(tmp_path / "a.txt")]}, max_length=8)
    first = build_train_dataset(cfg, byte_tokenizer, "byte", None, None)
    (tmp_path / "a.txt").write_text("second version of the text, longer")
    second = build_train_dataset(cfg, byte_tokenizer, "byte", None, None)
    assert not second.from_cache and second.path != first.path and len(second) > len(first)


def test_bad_local_inputs_name_the_field_before_tokenizing(tmp_path, byte_tokenizer, no_tokenizing):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"content": "no text field here"}) + "\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "notes.md").write_text("# notes")
    (tmp_path / "broken.jsonl").write_text('{"text": "unterminated\n')
    cases = [
        ({"train": [str(tmp_path / "missing.txt")]}, {}, "data.paths", "no such file"),
        ({"train": [str(tmp_path / "*.nothing")]}, {}, "data.paths", "matches no file"),
        ({"train": [str(tmp_path / "notes.md")]}, {}, "data.paths", "unsupported file type"),
        ({"validation": [str(tmp_path / "rows.jsonl")]}, {}, "data.paths", "no files for split 'train'"),
        ({"train": [str(tmp_path / "rows.jsonl")]}, {}, "data.text_field", "no column 'text'"),
        ({"train": [str(tmp_path / "empty.parquet")]}, {}, "data.paths", "holds no document"),
        ({"train": [str(tmp_path / "rows.jsonl")]}, {"max_length": 0}, "data.max_length", "must be positive"),
        ({"train": [str(tmp_path / "broken.jsonl")]}, {}, "data.paths", "broken.jsonl:1: not valid JSON"),
    ]
    for paths, changes, field, message in cases:
        with pytest.raises(ConfigError) as err:
            cfg = local_cfg(tmp_path, paths, **changes)
            build_train_dataset(cfg, byte_tokenizer, "byte", None, target_context=None)
        assert err.value.field == field and message in str(err.value) and "\n" not in str(err.value), str(
            err.value
        )


def test_streaming_checks_the_text_field_and_emptiness_too(tmp_path, byte_tokenizer, no_tokenizing):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    for name, field in (("rows.jsonl", "data.text_field"), ("empty.parquet", "data.paths")):
        cfg = local_cfg(tmp_path, {"train": [str(tmp_path / name)]}, streaming=True)
        with pytest.raises(ConfigError, match=rf"^{field}: "):
            build_train_dataset(cfg, byte_tokenizer, "byte", None, None)


def test_length_and_separator_checks_come_first(small_cfg, byte_tokenizer, no_tokenizing):
    with pytest.raises(ConfigError, match=r"^data\.max_length: 128 exceeds the target context s x L = 64"):
        build_train_dataset(small_cfg, byte_tokenizer, "byte", 10, target_context=64)
    with pytest.raises(ConfigError, match=r"^num_sequences: "):
        build_train_dataset(small_cfg, byte_tokenizer, "byte", 0, None)
    no_bos = byte_tokenizer.__class__(tokenizer_object=byte_tokenizer.backend_tokenizer, eos_token="</s>")
    with pytest.raises(ConfigError, match=r"^data\.add_bos: the tokenizer has no BOS"):
        build_train_dataset(small_cfg, no_bos, "byte-no-bos", None, None)
    with pytest.raises(ConfigError, match=r"^data\.train_split: the embedded corpus has no split"):
        build_train_dataset(
            dataclasses.replace(small_cfg, train_split="dev"), byte_tokenizer, "byte", None, None
        )
