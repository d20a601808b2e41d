"""Fixtures of the data tests: small slices of the embedded corpus, a cache per test."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from dprope.data import EMBEDDED, DataConfig, data_config
from dprope.data.embedded import embedded_files
from dprope.data.tokenizer import encode_texts


@pytest.fixture(scope="session", autouse=True)
def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()


@pytest.fixture
def small_cfg(tmp_path):
    """The embedded preset on its first 12 training files: ~150k byte tokens, 128-token sequences."""
    return dataclasses.replace(
        EMBEDDED,
        max_documents=12,
        max_length=128,
        batch_size=4,
        num_proc=1,
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A second, real tokenizer: byte-level BPE trained in code on a few embedded files."""
    from dprope.data.tokenizer import bpe_tokenizer

    return bpe_tokenizer([Path(p).read_text() for p in embedded_files("validation")[:10]], vocab_size=400)


@pytest.fixture
def no_tokenizing(monkeypatch):
    """Make any tokenization fail, to show a check came before it."""

    def refuse(tokenizer, texts):
        raise AssertionError("tokenized before the configuration was checked")

    for module in ("encode", "evaluation"):
        monkeypatch.setattr(f"dprope.data.{module}.encode_texts", refuse)


def reference_documents(cfg, tokenizer, split: str = "train") -> list[list[int]]:
    """Each embedded file of the slice read directly and tokenized alone, with its separators."""
    texts = [Path(p).read_text(errors="replace") for p in embedded_files(split)[: cfg.max_documents]]
    bos = [tokenizer.bos_token_id] if cfg.add_bos else []
    eos = [tokenizer.eos_token_id] if cfg.resolved().add_eos else []
    return [bos + ids + eos for ids in encode_texts(tokenizer, texts)]


def unpack(items, max_length: int) -> tuple[list[int], list[int]]:
    """The token stream and its document offsets, rebuilt from packed items (checking their shape)."""
    stream: list[int] = []
    starts: list[int] = []
    for index, item in enumerate(items):
        assert item["input_ids"].shape == (max_length,) and item["input_ids"].dtype == torch.long
        starts += (item["doc_starts"] + index * max_length).tolist()
        stream += item["input_ids"][: item["length"]].tolist()
    return stream, starts


def split_documents(stream: list[int], starts: list[int]) -> list[list[int]]:
    return [stream[a:b] for a, b in zip(starts, starts[1:] + [len(stream)], strict=True)]


def synthetic_texts(count: int = 40, seed: int = 0) -> list[str]:
    """Documents of made-up words (some accented, some empty, a few long), the same on every machine:
    only `random.random`, whose sequence Python keeps stable across versions, decides them."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzéüß—"
    words = ["".join(letters[int(rng.random() * len(letters))] for _ in range(1 + int(rng.random() * 9)))]
    words += [
        "".join(letters[int(rng.random() * len(letters))] for _ in range(1 + int(rng.random() * 9)))
        for _ in range(299)
    ]
    texts = []
    for index in range(count):
        size = 0 if index % 13 == 5 else int(rng.random() ** 3 * 3000)  # a few long documents, many short
        text = " ".join(words[int(rng.random() * len(words))] for _ in range(size))
        texts.append(text.replace("ab", "ab\n"))
    return texts


@pytest.fixture
def synthetic_cfg(tmp_path) -> DataConfig:
    """A local jsonl corpus of `synthetic_texts`, 64-token sequences, the cache in ``tmp_path``."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in synthetic_texts()))
    return data_config(
        {"name": "synthetic", "source": "files", "paths": {"train": [str(corpus)]}, "max_length": 64,
         "batch_size": 4, "num_proc": 1, "cache_dir": str(tmp_path / "cache")}
    )  # fmt: skip
