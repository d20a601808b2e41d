"""Packing as pure functions: every token once, in order; boundaries and lengths exact."""

from __future__ import annotations

import numpy as np
import pytest

from dprope.data.packing import (
    SHORT_PIECE,
    join_documents,
    num_packed,
    pack_stream,
    piece_batches,
    sequence_at,
    token_dtype,
    window_pieces,
)

BOS, EOS, PAD = 1, 2, 0


def random_documents(seed: int, count: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, 260, size=rng.integers(0, 90)).tolist() for _ in range(count)]


@pytest.mark.parametrize("bos, eos", [(BOS, EOS), (BOS, None), (None, EOS), (None, None)])
def test_join_documents_adds_separators_and_drops_empty_documents(bos, eos):
    documents = [[5, 6], [], [7]]
    tokens, lengths = join_documents(documents, bos, eos, np.dtype(np.uint16))
    expected = [([bos] if bos else []) + d + ([eos] if eos else []) for d in documents]
    expected = [d for d in expected if d]
    assert tokens.tolist() == [t for d in expected for t in d]
    assert lengths.tolist() == [len(d) for d in expected]


@pytest.mark.parametrize("max_length", [1, 7, 64, 1000])
@pytest.mark.parametrize("drop_tail", [True, False])
def test_stored_and_streamed_packing_agree_and_keep_every_token(max_length, drop_tail):
    documents = random_documents(max_length)
    tokens, lengths = join_documents(documents, BOS, EOS, np.dtype(np.uint16))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    count = num_packed(len(tokens), max_length, drop_tail)
    stored = [sequence_at(tokens, offsets, i, max_length, PAD) for i in range(count)]
    streamed = list(pack_stream(np.split(tokens, np.cumsum(lengths)[:-1]), max_length, drop_tail, PAD))
    assert len(streamed) == count
    for a, b in zip(stored, streamed, strict=True):
        assert a.input_ids.tolist() == b.input_ids.tolist() and a.doc_starts.tolist() == b.doc_starts.tolist()
        assert a.length == b.length and a.input_ids.shape == (max_length,)
        assert a.input_ids[a.doc_starts].tolist() == [BOS] * len(a.doc_starts)  # a start is a document's BOS
    kept = np.concatenate([s.input_ids[: s.length] for s in stored]).tolist()
    full = count * max_length if drop_tail else len(tokens)
    assert kept == tokens[:full].tolist()  # every token once, in order (a dropped tail excepted)
    starts = [int(p) + i * max_length for i, s in enumerate(stored) for p in s.doc_starts]
    assert starts == [int(o) for o in offsets if o < full]
    assert all(s.length == max_length for s in stored[:-1])
    if not drop_tail and len(tokens) % max_length:
        tail = stored[-1]
        assert tail.length == len(tokens) % max_length and set(tail.input_ids[tail.length :].tolist()) == {
            PAD
        }


def test_sequence_starting_inside_a_document_lists_no_start_at_zero():
    tokens, lengths = join_documents([[5] * 10, [6] * 3], BOS, EOS, np.dtype(np.uint16))  # 12 + 5 tokens
    offsets = np.array([0, 12])
    assert sequence_at(tokens, offsets, 0, 8, PAD).doc_starts.tolist() == [0]
    assert sequence_at(tokens, offsets, 1, 8, PAD).doc_starts.tolist() == [4]


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(260) == np.uint16 and token_dtype(32000) == np.uint16
    assert token_dtype(1 << 16) == np.uint16 and token_dtype(128256) == np.uint32


def test_an_id_too_large_for_the_dtype_is_an_error_not_wrapped():
    with pytest.raises(ValueError, match="70000 does not fit uint16"):
        join_documents([[5, 70000]], BOS, EOS, np.dtype(np.uint16))
    assert join_documents([[5, 70000]], BOS, EOS, np.dtype(np.uint32))[0].tolist() == [BOS, 5, 70000, EOS]
    assert join_documents([], BOS, EOS, np.dtype(np.uint16))[0].tolist() == []


def bos_documents(seed: int, count: int = 40) -> list[np.ndarray]:
    """Documents as the authors' tokenizer gives them: BOS, text, no EOS; some of 1-2 tokens."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 90, size=count)
    sizes[::7] = rng.integers(0, 3, size=len(sizes[::7]))  # BOS alone, or BOS and one token
    return [np.asarray([BOS, *rng.integers(4, 260, size=n)], dtype=np.uint16) for n in sizes]


@pytest.mark.parametrize("window", [5, 17, 64, 1000])
def test_window_pieces_start_every_window_with_bos_and_drop_only_short_pieces(window):
    documents = bos_documents(window)
    pieces = list(window_pieces(documents, window, BOS))
    stream = np.concatenate(pieces)
    ends = np.cumsum([len(p) for p in pieces])
    # no piece crosses a window's end, so every window begins with a piece, which begins with BOS
    assert set(range(window, len(stream), window)) <= set(ends.tolist())
    assert stream[::window].tolist() == [BOS] * len(stream[::window])
    assert all(p[0] == BOS for p in pieces)
    # each document of more than two tokens, in order, is its pieces with the added BOS removed,
    # except a rest of at most two tokens cut at a window's end
    rebuilt, kept = [], [d for d in documents if len(d) > SHORT_PIECE]
    for piece, end in zip(pieces, ends, strict=True):
        continued = (
            rebuilt and len(rebuilt[-1]) < len(kept[len(rebuilt) - 1]) and (end - len(piece)) % window == 0
        )
        if (
            continued
            and piece.tolist()[1:] == kept[len(rebuilt) - 1].tolist()[len(rebuilt[-1]) :][: len(piece) - 1]
        ):
            rebuilt[-1] = rebuilt[-1] + piece.tolist()[1:]
        else:
            rebuilt.append(piece.tolist())
    assert len(rebuilt) == len(kept)
    for done, document in zip(rebuilt, kept, strict=True):
        lost = len(document) - len(done)
        assert done == document.tolist()[: len(done)] and 0 <= lost <= SHORT_PIECE


def test_window_pieces_by_hand():
    documents = [BOS, 5, 6, 7, 8, 9, 9], [BOS, 5], [BOS, 6, 6], [BOS, 7, 7, 7]
    pieces = [p.tolist() for p in window_pieces([np.array(d, np.uint16) for d in documents], 4, BOS)]
    # windows of 4: the first document cut after 4 tokens goes on with a BOS; [BOS, 5] is left out;
    # [BOS, 6, 6] leaves room for one token: the last document's BOS, its rest going on after a BOS
    assert pieces == [[BOS, 5, 6, 7], [BOS, 8, 9, 9], [BOS, 6, 6], [BOS], [BOS, 7, 7, 7]]
    # a rest of two tokens is left out
    assert [p.tolist() for p in window_pieces([np.array([BOS, 3, 3, 3, 3, 3], np.uint16)], 4, BOS)] == [
        [BOS, 3, 3, 3]
    ]


@pytest.mark.parametrize("window", [7, 65])
def test_pieces_stored_and_streamed_agree(window):
    documents = bos_documents(window)
    tokens, lengths = join_documents([d[1:].tolist() for d in documents], BOS, None, np.dtype(np.uint16))
    joined = list(piece_batches([(tokens, lengths)], window, BOS))  # one tokenizer call, then two
    split = np.cumsum(lengths)[:-1]
    halves = [np.split(tokens, split)[:20], np.split(tokens, split)[20:]]
    by_call = list(
        piece_batches([(np.concatenate(h), np.array([len(d) for d in h])) for h in halves], window, BOS)
    )
    stored = np.concatenate([t for t, _ in joined])
    assert stored.tolist() == np.concatenate([t for t, _ in by_call]).tolist()
    piece_lengths = np.concatenate([n for _, n in joined])
    offsets = np.concatenate([[0], np.cumsum(piece_lengths)[:-1]])
    streamed = list(pack_stream(window_pieces(np.split(tokens, split), window, BOS), window, True, PAD))
    assert len(streamed) == len(stored) // window
    for index, sequence in enumerate(streamed):
        at = sequence_at(stored, offsets, index, window, PAD)
        assert at.input_ids.tolist() == sequence.input_ids.tolist()
        assert at.doc_starts.tolist() == sequence.doc_starts.tolist() and at.doc_starts[0] == 0
