"""Resumable distributed sampling: the same order every run, exact skips, any world size, and a
prefix-stable order (a longer run, or another global batch, continues with unseen samples)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from dprope.data import ResumableSampler, build_train_dataset, collate_packed
from dprope.data.sampler import SHUFFLE_BLOCK, covering_size

BLOCK = 16  # small blocks, so that the orders below span several


def rank_orders(num_samples, seed, world_size, consumed=0, block=BLOCK) -> list[list[int]]:
    return [
        list(ResumableSampler(num_samples, seed, r, world_size, consumed, block=block))
        for r in range(world_size)
    ]


def interleave(per_rank: list[list[int]]) -> list[int]:
    return [index for step in zip(*per_rank, strict=True) for index in step]


def test_same_order_on_every_run_and_a_permutation_of_whole_blocks():
    first = list(ResumableSampler(96, seed=3, block=BLOCK))
    assert first == list(ResumableSampler(96, seed=3, block=BLOCK)) and sorted(first) == list(range(96))
    assert first != list(ResumableSampler(96, seed=4, block=BLOCK))
    for block in range(6):  # shuffled within each block, never across
        assert sorted(first[block * BLOCK : (block + 1) * BLOCK]) == list(
            range(block * BLOCK, (block + 1) * BLOCK)
        )
    assert list(ResumableSampler(10, seed=3, shuffle=False)) == list(range(10))


def test_a_partial_block_draws_distinct_indices_of_its_whole_block():
    order = ResumableSampler(40, seed=3, block=BLOCK).global_order().tolist()
    assert len(set(order)) == 40 and max(order) < covering_size(40, BLOCK) == 48
    assert ResumableSampler(40, seed=3, block=BLOCK).dataset_size == 48
    assert covering_size(1) == covering_size(SHUFFLE_BLOCK) == SHUFFLE_BLOCK
    assert covering_size(SHUFFLE_BLOCK + 1) == 2 * SHUFFLE_BLOCK


@pytest.mark.parametrize("shorter,longer", [(16, 24), (40, 64), (7, 1000)])
def test_the_order_is_prefix_stable(shorter, longer):
    """A run planned for more samples starts with the shorter run's order: extending a run (more
    steps on resume) continues with samples the shorter one never drew."""
    short = ResumableSampler(shorter, seed=9, block=BLOCK).global_order().tolist()
    long = ResumableSampler(longer, seed=9, block=BLOCK).global_order().tolist()
    assert long[:shorter] == short
    assert not set(long[shorter:]) & set(short)
    # the default block as training uses it: 4 steps of 4, extended to 6
    assert (
        ResumableSampler(24, seed=0).global_order()[:16].tolist()
        == ResumableSampler(16, 0).global_order().tolist()
    )


def test_a_changed_global_batch_on_resume_continues_after_the_consumed_samples():
    """4 steps of 4 samples, then 3 steps of 8: the resumed steps take the next 24 positions of
    the same order, none seen before; a smaller batch likewise."""
    consumed = 4 * 4
    before = interleave(rank_orders(16, 2, 1))
    after = interleave(rank_orders(consumed + 3 * 8, 2, 2, consumed))
    whole = ResumableSampler(consumed + 3 * 8, seed=2, block=BLOCK).global_order().tolist()
    assert before + after == whole and len(set(whole)) == len(whole)
    smaller = interleave(rank_orders(consumed + 5 * 2, 2, 2, consumed))
    assert before + smaller == whole[: consumed + 10]


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_global_order_does_not_depend_on_world_size(world_size):
    order = ResumableSampler(64, seed=0, block=BLOCK).global_order().tolist()
    assert interleave(rank_orders(64, 0, world_size)) == order


@pytest.mark.parametrize("consumed", [0, 1, 24, 63, 64])
def test_skipping_consumed_samples_is_exact(consumed):
    order = ResumableSampler(64, seed=5, block=BLOCK).global_order().tolist()
    assert (
        interleave(rank_orders(64, 5, 2, consumed)) == order[consumed : consumed + (64 - consumed) // 2 * 2]
    )


def test_world_size_change_on_resume_sees_each_sample_once():
    global_batch, steps_before = 8, 5
    consumed = steps_before * global_batch  # what the checkpoint records (consumed_samples)
    before = interleave(rank_orders(96, 1, 2))[:consumed]
    after = interleave(rank_orders(96, 1, 4, consumed))
    assert sorted(before + after) == list(range(96))
    assert before + after == ResumableSampler(96, seed=1, block=BLOCK).global_order().tolist()


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
    dataset = build_train_dataset(small_cfg, byte_tokenizer, "byte", covering_size(24, 8), None)
    global_batch, micro, world = 4, 2, 2

    def batches(rank, world_size, consumed):
        sampler = ResumableSampler(24, 7, rank, world_size, consumed, block=8)
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
