"""Fixtures of the data tests: small slices of the embedded corpus, a cache per test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dprope.data import EMBEDDED
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

    for module in ("build", "packed", "evaluation"):
        monkeypatch.setattr(f"dprope.data.{module}.encode_texts", refuse)


def reference_documents(cfg, tokenizer, split: str = "train") -> list[list[int]]:
    """Each embedded file of the slice read directly and tokenized alone, with its separators."""
    texts = [Path(p).read_text(errors="replace") for p in embedded_files(split)[: cfg.max_documents]]
    bos = [tokenizer.bos_token_id] if cfg.add_bos else []
    eos = [tokenizer.eos_token_id] if cfg.add_eos else []
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
