"""Streaming: packed on the fly, deterministic, exact skips and rank split, same documents as the cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from dprope.data import PackedStream, build_train_dataset, collate_packed
from tests.data.conftest import reference_documents, split_documents, unpack


@pytest.fixture
def stream_cfg(small_cfg):
    return dataclasses.replace(small_cfg, streaming=True, shuffle_buffer=5)


def stream(cfg, tokenizer, num_sequences=None) -> PackedStream:
    dataset = build_train_dataset(cfg, tokenizer, "byte", num_sequences, None)
    assert isinstance(dataset, PackedStream)
    return dataset


def ids(items) -> list[list[int]]:
    return [item["input_ids"].tolist() for item in items]


def test_stream_packs_every_document_once(stream_cfg, byte_tokenizer):
    cfg = dataclasses.replace(stream_cfg, drop_tail=False)
    items = list(stream(cfg, byte_tokenizer))
    assert not (
        cfg.cache_root.exists() and [p for p in cfg.cache_root.iterdir() if p.name.startswith("embedded")]
    )
    documents = split_documents(*unpack(items, cfg.max_length))
    assert sorted(documents) == sorted(reference_documents(cfg, byte_tokenizer))


def test_stream_is_deterministic_and_skips_exactly(stream_cfg, byte_tokenizer):
    full = ids(stream(stream_cfg, byte_tokenizer, num_sequences=30))
    assert len(full) == 30 and full == ids(stream(stream_cfg, byte_tokenizer, num_sequences=30))
    assert ids(stream(stream_cfg, byte_tokenizer, num_sequences=30).resume(consumed=11)) == full[11:]
    per_rank = [
        ids(stream(stream_cfg, byte_tokenizer, 30).resume(consumed=10, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert [row for pair in zip(*per_rank, strict=True) for row in pair] == full[10:]


def test_stream_repeats_the_corpus_with_a_new_shuffle(stream_cfg, byte_tokenizer):
    one_pass = ids(stream(stream_cfg, byte_tokenizer))
    longer = ids(stream(stream_cfg, byte_tokenizer, num_sequences=len(one_pass) + 3))
    assert longer[: len(one_pass)] == one_pass and len(longer) == len(one_pass) + 3


def test_one_dataloader_worker_keeps_the_order(stream_cfg, byte_tokenizer):
    dataset = stream(stream_cfg, byte_tokenizer, num_sequences=12)
    alone = torch.cat([b["input_ids"] for b in DataLoader(dataset, batch_size=2, collate_fn=collate_packed)])
    worker = torch.cat(
        [b["input_ids"] for b in DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_packed)]
    )
    assert torch.equal(alone, worker) and len(alone) == 12


def test_stream_threads_do_not_change_the_sequences(stream_cfg, byte_tokenizer):
    one = stream(stream_cfg, byte_tokenizer, num_sequences=40)
    two = stream(dataclasses.replace(stream_cfg, num_proc=2), byte_tokenizer, num_sequences=40)
    assert two.threads == 2 and ids(two) == ids(one)


def test_steady_memory_changes_no_sequence(stream_cfg, byte_tokenizer):
    """`data.steady_memory` reaches the stream; bounded calls and allocator settings (on) give the
    same sequences as unbounded ones (off), on several threads with calls that meet the budget."""
    steady = stream(
        dataclasses.replace(stream_cfg, num_proc=3, batch_size=1), byte_tokenizer, num_sequences=40
    )
    free = dataclasses.replace(stream_cfg, num_proc=3, batch_size=1, steady_memory=False)
    unbounded = stream(free, byte_tokenizer, num_sequences=40)
    assert steady.steady_memory and not unbounded.steady_memory
    assert ids(steady) == ids(unbounded)
