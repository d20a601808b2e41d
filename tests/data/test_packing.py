"""Packing as pure functions: every token once, in order; boundaries and lengths exact."""

from __future__ import annotations

import numpy as np
import pytest

from dprope.data.packing import join_documents, num_packed, pack_stream, sequence_at, token_dtype

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
