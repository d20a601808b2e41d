"""Packing: documents joined into one token stream, cut into sequences of exactly ``max_length``.

Each document becomes ``<s> tokens </s>`` (``add_bos`` / ``add_eos``) and the documents follow
one another with nothing else between them, as in LLaMA-style pre-training: the BOS tells the
model a new, unrelated text begins, and the EOS gives it a place to learn where a text stops.
Sequence ``i`` is the stream's tokens ``[i * max_length, (i + 1) * max_length)``; a document may
continue from one sequence into the next. ``doc_starts`` lists the in-sequence positions where a
document's first token (its BOS) lies, from which the document and anchor attention modes
(``trainer.attention``, `dprope.data.segments`; AnchorAttention, Wang et al. 2024) build their
positions and masks without re-packing; a sequence that begins inside a document does not list 0. The last, partial sequence is dropped, or kept padded with ``length`` < max_length.

The same cut is computed two ways: `sequence_at` over a stored stream (the cache), and
`pack_stream` over documents as they come (streaming). Both are pure functions of their inputs.

``data.packing=pieces`` (the AnchorAttention authors' packing, Wang et al. 2024, their public
code) first turns the documents into `WindowPieces`: windows are filled document by document,
and a document cut at a window's end goes on at the start of the next window as a piece with its
own BOS (the anchor there), so that every window begins with a BOS and the cut above falls
between pieces; documents of `SHORT_PIECE` tokens or fewer (separators included), and continued
pieces of that many tokens or fewer (their added BOS not counted), are left out, as theirs are.
The stream of pieces is then stored and cut like any other, ``doc_starts`` listing the pieces.
With ``data.extra_target`` a sequence is ``max_length + 1`` tokens (the window), the last one
only a target (`dprope.data.dataset.as_item`).
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class PackedSequence:
    input_ids: np.ndarray  # (max_length,) int64, padded after `length`
    doc_starts: np.ndarray  # (num_starts,) int64, increasing positions in [0, length)
    length: int  # real tokens; max_length except for a kept tail


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type for the ids: uint16 covers LLaMA-2's 32000, halving the cache."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def join_documents(
    documents: Sequence[Sequence[int]], bos: int | None, eos: int | None, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """One stream ``[bos] doc [eos] [bos] doc [eos] ...`` and the length of each document in it.

    Documents left empty (no text and no separator) are dropped, so every length is positive.
    The ids are gathered in an `array.array`, whose ``extend`` converts a list of ints in one C
    loop (about 4x faster than an array per document); an id that does not fit ``dtype`` is an
    error, never wrapped around.
    """
    prefix = [] if bos is None else [bos]
    suffix = [] if eos is None else [eos]
    joined = array.array("I")  # C unsigned int: any vocabulary's ids
    lengths = []
    for ids in documents:
        length = len(prefix) + len(ids) + len(suffix)
        if length:
            joined.extend(prefix)
            joined.extend(ids)
            joined.extend(suffix)
            lengths.append(length)
    wide = np.frombuffer(joined, dtype=np.dtype(f"u{joined.itemsize}"))
    if len(wide) and np.dtype(dtype).itemsize < joined.itemsize and wide.max() > np.iinfo(dtype).max:
        raise ValueError(f"token id {wide.max()} does not fit {np.dtype(dtype).name}")
    return wide.astype(dtype), np.asarray(lengths, dtype=np.int64)


SHORT_PIECE = 2  # pieces packing: documents and continued pieces of at most this many tokens are left out


class WindowPieces:
    """The pieces of each document in turn, for windows of ``window`` tokens (``data.packing=pieces``).

    A document that fits the current window is one piece; one that does not is cut at the window's
    end, and its rest goes on in the next window after a ``bos`` (when not None), cut again as
    often as needed. Stateful: it remembers how full the current window is, across documents.
    """

    def __init__(self, window: int, bos: int | None, short: int = SHORT_PIECE):
        self.window, self.bos, self.short = window, bos, short
        self.filled = 0  # tokens already in the current window

    def of(self, document: np.ndarray) -> list[np.ndarray]:
        if len(document) <= self.short:
            return []
        pieces = []
        piece = document
        while len(piece) > self.window - self.filled:
            space = self.window - self.filled
            pieces.append(piece[:space])
            self.filled = 0
            rest = piece[space:]
            if len(rest) <= self.short:  # the authors skip such a piece before adding its BOS
                return pieces
            if self.bos is not None and rest[0] != self.bos:
                rest = np.concatenate([np.asarray([self.bos], dtype=rest.dtype), rest])
            piece = rest
        pieces.append(piece)
        self.filled = (self.filled + len(piece)) % self.window
        return pieces


def window_pieces(documents: Iterable[np.ndarray], window: int, bos: int | None) -> Iterator[np.ndarray]:
    """`WindowPieces` of documents as they come (streaming)."""
    pieces = WindowPieces(window, bos)
    for document in documents:
        yield from pieces.of(document)


def piece_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], window: int, bos: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`WindowPieces` of joined calls (``(tokens, document lengths)``, as `join_documents` returns
    them): the same tokens cut into pieces, and each piece's length."""
    pieces = WindowPieces(window, bos)
    for tokens, lengths in batches:
        cut = [p for d in np.split(tokens, np.cumsum(lengths)[:-1]) for p in pieces.of(d)]
        joined = np.concatenate(cut) if cut else tokens[:0]
        yield joined, np.asarray([len(p) for p in cut], dtype=np.int64)


def num_packed(num_tokens: int, max_length: int, drop_tail: bool) -> int:
    """How many sequences a stream of ``num_tokens`` tokens packs into."""
    return num_tokens // max_length if drop_tail else -(-num_tokens // max_length)


def sequence_at(
    tokens: np.ndarray, doc_offsets: np.ndarray, index: int, max_length: int, pad_id: int
) -> PackedSequence:
    """Sequence ``index`` of a stored stream; ``doc_offsets`` are the documents' first positions in it."""
    begin = index * max_length
    end = min(begin + max_length, len(tokens))
    input_ids = np.full(max_length, pad_id, dtype=np.int64)
    input_ids[: end - begin] = tokens[begin:end]
    first, last = np.searchsorted(doc_offsets, [begin, end], side="left")
    return PackedSequence(input_ids, np.asarray(doc_offsets[first:last], dtype=np.int64) - begin, end - begin)


def pack_stream(
    documents: Iterable[np.ndarray], max_length: int, drop_tail: bool, pad_id: int
) -> Iterator[PackedSequence]:
    """The sequences of `sequence_at`, produced from documents as they come, in constant memory
    (at most one sequence and one document held)."""
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    filled = 0
    for document in documents:
        if len(document):
            starts.append(filled)
        position = 0
        while position < len(document):
            take = min(max_length - filled, len(document) - position)
            pieces.append(document[position : position + take])
            filled += take
            position += take
            if filled == max_length:
                yield PackedSequence(
                    np.concatenate(pieces).astype(np.int64), np.asarray(starts, np.int64), max_length
                )
                pieces, starts, filled = [], [], 0
    if filled and not drop_tail:
        input_ids = np.full(max_length, pad_id, dtype=np.int64)
        input_ids[:filled] = np.concatenate(pieces)
        yield PackedSequence(input_ids, np.asarray(starts, np.int64), filled)
