"""Resumable, distributed sampling and the batch collation of packed sequences.

The global order is prefix-stable: position ``p`` of the order names the same dataset index
whatever the number of steps or the global batch a run plans. It shuffles the packed sequences
within consecutive blocks of `SHUFFLE_BLOCK`: block ``b`` (positions ``b x B .. (b + 1) x B - 1``)
is a permutation of the dataset indices ``b x B .. (b + 1) x B - 1`` drawn from ``(seed, b)``
alone. A run of ``N`` samples therefore needs a dataset of `covering_size` ``(N)`` sequences (``N``
rounded up to whole blocks), and raising ``trainer.steps`` on resume continues with samples no
earlier step has seen, in the order a run planned that long from the start would take. The
packed sequences come out of a seeded document shuffle already (`dprope.data.build`); the block
shuffle only spreads the consecutive sequences of one long document over different steps.

Training consumes the order front to back, a global batch at a time: after ``k`` optimizer steps,
``consumed = k x global_batch`` samples are behind. Rank ``r`` of ``W`` takes global positions
``consumed + r, consumed + r + W, ...``; since a global batch is a multiple of ``W``, each step's
global batch is exactly the next ``global_batch`` positions of the order, whichever ranks hold
them. Neither the world size nor the global batch changes the order, so a resume with another
global batch also continues right after the ``consumed`` samples.

Resuming with another world size: restart the sampler with the same seed and the ``consumed``
of the checkpoint and the new ``W``. The samples already consumed are skipped exactly; the rest
are shared among the new ranks and each is still seen once. What changes is only which rank
holds which sample of a batch, which a data-parallel step does not see (the gradient is the
mean over the global batch). The global batch itself must stay a multiple of the new ``W``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

# packed sequences shuffled together: the order's look-ahead, and what a run's dataset is rounded to
SHUFFLE_BLOCK = 1024


def covering_size(num_samples: int, block: int = SHUFFLE_BLOCK) -> int:
    """The dataset size the first ``num_samples`` positions of the order draw from: whole blocks."""
    return -(-num_samples // block) * block


class ResumableSampler(torch.utils.data.Sampler[int]):
    """This rank's dataset indices of the seeded global order, after ``consumed`` global samples.

    ``num_samples`` is the number of positions the run draws (``N``); with ``shuffle`` the
    dataset must hold `covering_size` ``(N, block)`` items, without it ``N``. Every rank gets the
    same number, ``(num_samples - consumed) // world_size``: the last ``< world_size`` samples are
    left out rather than repeated, so no rank waits on another.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        consumed: int = 0,
        shuffle: bool = True,
        block: int = SHUFFLE_BLOCK,
    ):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive (got {num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if block <= 0:
            raise ValueError(f"block must be positive (got {block})")
        self.num_samples, self.seed, self.shuffle, self.block = num_samples, seed, shuffle, block
        self.rank, self.world_size = rank, world_size
        self.consumed = 0
        self.set_consumed(consumed)

    @property
    def dataset_size(self) -> int:
        """The dataset indices the order draws from: ``0 .. dataset_size - 1``."""
        return covering_size(self.num_samples, self.block) if self.shuffle else self.num_samples

    def set_consumed(self, consumed: int) -> None:
        if not 0 <= consumed <= self.num_samples:
            raise ValueError(f"consumed {consumed} outside [0, {self.num_samples}]")
        self.consumed = consumed

    def block_order(self, block: int) -> np.ndarray:
        """Dataset indices of positions ``block x B .. (block + 1) x B - 1``: a permutation of the
        same range, drawn from ``(seed, block)`` alone."""
        permutation = np.random.default_rng([self.seed, block]).permutation(self.block)
        return block * self.block + permutation

    def global_order(self) -> torch.Tensor:
        """The first ``num_samples`` dataset indices in training order (independent of rank, world
        size, global batch and of ``num_samples`` itself: a longer run's order starts with it)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        blocks = range(covering_size(self.num_samples, self.block) // self.block)
        return torch.from_numpy(np.concatenate([self.block_order(b) for b in blocks])[: self.num_samples])

    def __len__(self) -> int:
        return (self.num_samples - self.consumed) // self.world_size

    def __iter__(self) -> Iterator[int]:
        stop = self.consumed + len(self) * self.world_size
        yield from self.global_order()[self.consumed + self.rank : stop : self.world_size].tolist()


def cumulative_lengths(segment_starts: Sequence[Sequence[int]], seq_len: int) -> tuple[torch.Tensor, int]:
    """Flash-attn varlen ``cu_seqlens`` and the longest segment of a flattened batch.

    Row ``r`` of the batch covers tokens ``r * seq_len .. (r + 1) * seq_len - 1`` of the flattened
    batch and is cut into segments at ``segment_starts[r]`` (positions within the row; a row
    always starts a segment at 0). Attention never crosses a segment boundary. The causal mode
    passes ``[0]`` for every row (each sequence is one segment); document masking passes the
    rows' document starts. Built on the CPU, so no GPU value is read to find the segments.

    Returns ``(cu_seqlens, max_length)``: int32 offsets ``[0, end_1, ..., batch * seq_len]`` and
    a Python int.
    """
    bounds: list[int] = []
    for row, starts in enumerate(segment_starts):
        offset = row * seq_len
        row_starts = sorted({0, *(int(s) for s in starts if 0 < int(s) < seq_len)})
        bounds.extend(offset + s for s in row_starts)
    bounds.append(len(segment_starts) * seq_len)
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    max_length = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if len(bounds) > 1 else 0
    return cu_seqlens, max_length


def collate_packed(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack packed items for a causal LM (``trainer.attention=causal``).

    ``labels`` equal ``input_ids`` (the model shifts them), except padding of a kept tail: -100.
    ``position_ids`` are ``0 .. T-1`` on every row; the document and anchor modes build theirs
    from ``doc_starts`` (`dprope.data.segments.collate_documents`). ``doc_starts`` stays a list,
    one tensor per row. ``cu_seqlens``/``max_length`` (`cumulative_lengths`) make each row one
    attention segment, for flash-attn's varlen kernel.
    """
    input_ids = torch.stack([item["input_ids"] for item in batch])  # (batch, seq)
    labels = input_ids.clone()
    for row, item in enumerate(batch):
        labels[row, item.get("length", input_ids.shape[1]) :] = -100
    position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids).clone()  # (batch, seq)
    cu_seqlens, max_length = cumulative_lengths([[0]] * len(batch), input_ids.shape[1])
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "doc_starts": [item["doc_starts"] for item in batch],
        "cu_seqlens": cu_seqlens,  # (segments + 1,) int32, CPU
        "max_length": max_length,  # longest segment, a Python int
    }
