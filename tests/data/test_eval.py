"""Evaluation documents: whole, unpacked, BOS first, filtered and capped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dprope.config import ConfigError
from dprope.data import eval_documents
from dprope.data.embedded import embedded_files


def test_whole_documents_in_source_order(small_cfg, byte_tokenizer):
    cfg = dataclasses.replace(small_cfg, max_documents=4)
    documents = list(eval_documents(cfg, byte_tokenizer, "validation"))
    texts = [Path(p).read_text() for p in embedded_files("validation")[:4]]
    assert documents == [
        byte_tokenizer(text)["input_ids"] for text in texts
    ]  # BOS first, as the tokenizer itself
    assert all(
        d[0] == byte_tokenizer.bos_token_id and byte_tokenizer.eos_token_id not in d for d in documents
    )


def test_min_tokens_and_max_documents(small_cfg, byte_tokenizer):
    cfg = dataclasses.replace(small_cfg, max_documents=20)
    every = list(eval_documents(cfg, byte_tokenizer, "test"))
    long = list(eval_documents(cfg, byte_tokenizer, "test", min_tokens=4000, max_documents=3))
    assert long == [d for d in every if len(d) >= 4000][:3] and len(long) == 3


def test_bad_split_is_refused(small_cfg, byte_tokenizer, no_tokenizing):
    with pytest.raises(ConfigError, match=r"^data\.eval_splits: split 'train' is not an evaluation split"):
        eval_documents(small_cfg, byte_tokenizer, "train")
    with pytest.raises(ConfigError, match=r"^max_documents: "):
        eval_documents(small_cfg, byte_tokenizer, "test", max_documents=0)
