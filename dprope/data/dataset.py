"""The training datasets: packed sequences read from the cache, or packed on the fly (streaming).

Both yield the same items::

    {"input_ids": LongTensor (max_length,), "doc_starts": LongTensor (num_starts,), "length": int}

``length`` is ``max_length`` except for a kept tail, whose padding `collate_packed` leaves out
of the loss. With ``data.extra_target`` each window is read with one token more, and an item
also has ``"next_token": int``, that token: the target of its last position (-100 when the
window has none, in a kept tail), from which the collate builds ``shift_labels``
(`dprope.data.segments`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dprope.data.cache import DOC_OFFSETS, META, TOKENS
from dprope.data.encode import encoded_batches
from dprope.data.memory import steady_allocator
from dprope.data.packing import (
    PackedSequence,
    num_packed,
    pack_stream,
    sequence_at,
    token_dtype,
    window_pieces,
)

NO_TARGET = -100  # the label the loss ignores


def as_item(sequence: PackedSequence, inputs: int | None = None) -> dict[str, Any]:
    """The dataset item of a packed window; a window of ``inputs + 1`` tokens (``data.extra_target``)
    gives its first ``inputs`` tokens as the input and its last as ``next_token``."""
    if inputs is None or len(sequence.input_ids) == inputs:
        return {
            "input_ids": torch.from_numpy(sequence.input_ids),
            "doc_starts": torch.from_numpy(sequence.doc_starts),
            "length": sequence.length,
        }
    starts = sequence.doc_starts[sequence.doc_starts < inputs]
    return {
        "input_ids": torch.from_numpy(sequence.input_ids[:inputs].copy()),
        "doc_starts": torch.from_numpy(starts),
        "length": min(sequence.length, inputs),
        "next_token": int(sequence.input_ids[inputs]) if sequence.length > inputs else NO_TARGET,
    }


class PackedDataset(torch.utils.data.Dataset):
    """Map-style packed sequences of a complete cache directory, memory-mapped (nothing is read
    up front, and DataLoader workers share the page cache).

    ``num_sequences`` (steps x global batch) larger than what the corpus packs into repeats the
    packed sequences in order: item ``i`` is packed sequence ``i mod num_packed``.
    """

    def __init__(self, path: str | Path, num_sequences: int | None = None, from_cache: bool = False):
        self.path = Path(path)
        self.meta = json.loads((self.path / META).read_text())
        self.max_length: int = self.meta["key"]["max_length"]  # inputs per item
        self.window = self.max_length + bool(self.meta["key"].get("extra_target", False))  # tokens read
        self.pad_id: int = self.meta["pad_id"]
        self.num_packed = num_packed(self.meta["num_tokens"], self.window, self.meta["key"]["drop_tail"])
        self.num_sequences = num_sequences or self.num_packed
        self.from_cache = from_cache  # True when this run reused a cache instead of building it
        self._tokens: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tokens is None:
            dtype = np.dtype(self.meta["dtype"])
            self._tokens = np.memmap(
                self.path / TOKENS, dtype=dtype, mode="r", shape=(self.meta["num_tokens"],)
            )
            self._offsets = np.load(self.path / DOC_OFFSETS, mmap_mode="r")
        return self._tokens, self._offsets  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None, "_offsets": None}  # workers map the files again

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"sequence {index} of {self.num_sequences}")
        tokens, offsets = self._arrays()
        window = sequence_at(tokens, offsets, index % self.num_packed, self.window, self.pad_id)
        return as_item(window, self.max_length)


class PackedStream(torch.utils.data.IterableDataset):
    """Packed sequences made on the fly from a `datasets` stream, in memory flat in corpus size.

    The global order is fixed by the seed: documents pass through the stream's buffer shuffle
    (epoch ``e`` reshuffles with ``set_epoch(e)``), are tokenized by ``threads`` threads a call
    at a time (`dprope.data.encode`), cut into `dprope.data.packing.WindowPieces` (``pieces``)
    and packed by `pack_stream` into windows of ``max_length`` tokens (one more with
    ``extra_target``). Memory is the shuffle buffer,
    the calls in flight and one sequence, whatever the corpus size (with ``steady_memory``, the
    allocator settings of `dprope.data.memory` keep freed memory from accumulating). Global
    sequence ``g`` goes to the same rank as in `ResumableSampler` without shuffling: after
    skipping ``consumed``, rank ``r`` of ``W`` takes ``g = consumed + r + k W``. Skipping is
    exact but not free: the skipped sequences are tokenized again. With ``num_sequences``, each rank stops after ``(num_sequences - consumed) // W`` items, passing
    over the corpus again (next epoch) when it runs out. Every rank reads and tokenizes the whole
    stream, so one DataLoader worker at most: it overlaps tokenizing with training, a second
    would only tokenize everything again.
    """

    def __init__(
        self,
        documents,
        tokenizer,
        separators: tuple[int | None, int | None],
        max_length: int,
        drop_tail: bool,
        pad_id: int,
        batch_size: int,
        seed: int,
        shuffle_buffer: int,
        num_sequences: int | None,
        threads: int = 1,
        steady_memory: bool = False,
        extra_target: bool = False,
        pieces: bool = False,
    ):
        self.documents = documents  # a datasets.IterableDataset with the column `text`
        self.tokenizer = tokenizer
        self.separators = separators
        self.max_length, self.drop_tail, self.pad_id = max_length, drop_tail, pad_id
        self.batch_size, self.seed, self.shuffle_buffer = batch_size, seed, shuffle_buffer
        self.num_sequences = num_sequences
        self.threads = threads
        self.steady_memory = steady_memory  # `dprope.data.memory.steady_allocator` before the first document
        self.window = max_length + extra_target  # tokens read per item (data.extra_target)
        self.pieces = pieces  # data.packing=pieces
        self.consumed, self.rank, self.world_size = 0, 0, 1

    def resume(self, consumed: int = 0, rank: int = 0, world_size: int = 1) -> PackedStream:
        """Start after ``consumed`` global sequences, as rank ``rank`` of ``world_size``."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if consumed < 0 or (self.num_sequences is not None and consumed > self.num_sequences):
            raise ValueError(f"consumed {consumed} outside [0, {self.num_sequences}]")
        self.consumed, self.rank, self.world_size = consumed, rank, world_size
        return self

    def _documents(self, epoch: int) -> Iterator[np.ndarray]:
        """The epoch's documents as token arrays with their separators."""
        if self.steady_memory:
            steady_allocator()
        documents = self.documents.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        documents.set_epoch(epoch)
        batches = (batch["text"] for batch in documents.iter(batch_size=self.batch_size))
        dtype = token_dtype(len(self.tokenizer))  # pack_stream widens each sequence to int64
        encoded = encoded_batches(
            batches,
            self.tokenizer,
            self.separators,
            dtype,
            self.threads,
            self.batch_size,
            steady=self.steady_memory,
        )
        with closing(encoded):  # a consumer that stops early cancels the calls still queued
            for tokens, lengths in encoded:
                yield from np.split(tokens, np.cumsum(lengths)[:-1])

    def sequences(self) -> Iterator[PackedSequence]:
        """The global order of packed sequences, every rank's and every worker's alike."""
        epoch = 0
        while True:
            count = 0
            documents = self._documents(epoch)
            if self.pieces:
                documents = window_pieces(documents, self.window, self.separators[0])
            for sequence in pack_stream(documents, self.window, self.drop_tail, self.pad_id):
                count += 1
                yield sequence
            if self.num_sequences is None:
                return
            if count == 0:
                raise ValueError(f"the corpus packs into no sequence of {self.max_length} tokens")
            epoch += 1

    def __len__(self) -> int:
        if self.num_sequences is None:
            raise TypeError("a stream without num_sequences has no length")
        return (self.num_sequences - self.consumed) // self.world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError(
                "a PackedStream takes one DataLoader worker at most (each would tokenize it all)"
            )
        per_rank = None if self.num_sequences is None else len(self)
        for position, sequence in enumerate(self.sequences()):
            local, rank = divmod(position - self.consumed, self.world_size)
            if per_rank is not None and local >= per_rank:
                return
            if position >= self.consumed and rank == self.rank:
                yield as_item(sequence, self.max_length)
