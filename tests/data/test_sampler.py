"""Resumable distributed sampling: the same order every run, exact skips, any world size."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from dprope.data import ResumableSampler, build_train_dataset, collate_packed


def rank_orders(num_samples, seed, world_size, consumed=0) -> list[list[int]]:
    return [list(ResumableSampler(num_samples, seed, r, world_size, consumed)) for r in range(world_size)]


def interleave(per_rank: list[list[int]]) -> list[int]:
    return [index for step in zip(*per_rank, strict=True) for index in step]


def test_same_order_on_every_run_and_a_permutation():
    first = list(ResumableSampler(100, seed=3))
    assert first == list(ResumableSampler(100, seed=3)) and sorted(first) == list(range(100))
    assert first != list(ResumableSampler(100, seed=4))
    assert list(ResumableSampler(10, seed=3, shuffle=False)) == list(range(10))


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_global_order_does_not_depend_on_world_size(world_size):
    order = ResumableSampler(64, seed=0).global_order().tolist()
    assert interleave(rank_orders(64, 0, world_size)) == order


@pytest.mark.parametrize("consumed", [0, 1, 24, 63, 64])
def test_skipping_consumed_samples_is_exact(consumed):
    order = ResumableSampler(64, seed=5).global_order().tolist()
    assert (
        interleave(rank_orders(64, 5, 2, consumed)) == order[consumed : consumed + (64 - consumed) // 2 * 2]
    )


def test_world_size_change_on_resume_sees_each_sample_once():
    global_batch, steps_before = 8, 5
    consumed = steps_before * global_batch  # what the checkpoint records (consumed_samples)
    before = interleave(rank_orders(96, 1, 2))[:consumed]
    after = interleave(rank_orders(96, 1, 4, consumed))
    assert sorted(before + after) == list(range(96))
    assert before + after == ResumableSampler(96, seed=1).global_order().tolist()


def test_ranks_get_equal_counts_dropping_the_remainder():
    assert [len(r) for r in rank_orders(10, 0, 4)] == [2, 2, 2, 2]
    assert len(ResumableSampler(10, 0, 3, 4, consumed=3)) == 1


def test_consumed_beyond_the_dataset_is_refused():
    with pytest.raises(ValueError, match="consumed 51 outside"):
        ResumableSampler(50, seed=2, consumed=51)


def test_collate_packed_shapes_labels_and_positions():
    items = [
        {"input_ids": torch.arange(6), "doc_starts": torch.tensor([0, 4]), "length": 6},
        {"input_ids": torch.tensor([7, 8, 9, 0, 0, 0]), "doc_starts": torch.tensor([1]), "length": 3},
    ]
    batch = collate_packed(items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (2, 6)
    assert batch["labels"][0].tolist() == list(range(6)) and batch["labels"][1].tolist() == [
        7,
        8,
        9,
        -100,
        -100,
        -100,
    ]
    assert batch["position_ids"].tolist() == [list(range(6))] * 2
    assert [d.tolist() for d in batch["doc_starts"]] == [[0, 4], [1]]


def test_resumed_loader_sees_exactly_what_an_uninterrupted_run_would(small_cfg, byte_tokenizer):
    dataset = build_train_dataset(small_cfg, byte_tokenizer, "byte", 24, None)
    global_batch, micro, world = 4, 2, 2

    def batches(rank, world_size, consumed):
        sampler = ResumableSampler(len(dataset), 7, rank, world_size, consumed)
        return [
            b["input_ids"]
            for b in DataLoader(dataset, batch_size=micro, sampler=sampler, collate_fn=collate_packed)
        ]

    uninterrupted = batches(0, 1, 0)  # one rank: micro-batches of 2, consecutive global positions
    steps_done = 3
    consumed = steps_done * global_batch
    resumed = [batches(rank, world, consumed) for rank in range(world)]
    rows_after = torch.cat(uninterrupted)[consumed:]
    rank_rows = [torch.cat(r) for r in resumed]
    assert torch.equal(torch.stack(rank_rows, dim=1).flatten(0, 1), rows_after)
