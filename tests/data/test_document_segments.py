"""Segment layout of packed windows: positions, segments, anchors and flash-attn's cu_seqlens."""

from __future__ import annotations

import pytest
import torch

from dprope.data.segments import ANCHOR, DOCUMENT, collate_segments, cu_seqlens, window_layout

BOS = 1


def item(length: int, max_length: int, starts: list[int]) -> dict:
    ids = torch.arange(10, 10 + max_length)
    ids[starts] = BOS
    ids[length:] = 0
    return {"input_ids": ids, "doc_starts": torch.tensor(starts, dtype=torch.long), "length": length}


def test_document_positions_restart_at_every_document_and_at_a_continuation():
    positions, segments, anchor = window_layout(torch.tensor([3, 7]), 10, 10, DOCUMENT)
    assert positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2]
    assert segments.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert not anchor


def test_anchor_positions_run_on_with_every_bos_at_zero():
    positions, segments, anchor = window_layout(torch.tensor([0, 4]), 8, 8, ANCHOR)
    assert positions.tolist() == [0, 1, 2, 3, 0, 5, 6, 7]
    assert segments.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert not anchor
    _, _, anchor = window_layout(torch.tensor([4]), 8, 8, ANCHOR)
    assert anchor  # the window begins inside a document


def test_padding_is_a_segment_of_its_own():
    positions, segments, _ = window_layout(torch.tensor([0, 3]), 6, 9, ANCHOR)
    assert segments.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert positions.tolist()[:6] == [0, 1, 2, 0, 4, 5]


def test_cu_seqlens_cover_the_flattened_batch():
    segments = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 2]])
    bounds, longest = cu_seqlens(segments)
    assert bounds.dtype == torch.int32
    assert bounds.tolist() == [0, 2, 5, 6, 9, 10]  # row 2 starts at 5
    assert longest == 3


def test_collate_puts_the_anchor_first_only_where_a_document_continues():
    batch = [item(8, 8, [3]), item(8, 8, [0, 5])]
    out = collate_segments(batch, ANCHOR, BOS)
    assert out["input_ids"][0, 0] == BOS and out["input_ids"][0, 1] == 11  # token 0 became the anchor
    assert torch.equal(out["input_ids"][1], batch[1]["input_ids"])
    assert out["position_ids"][0].tolist() == [0, 1, 2, 0, 4, 5, 6, 7]
    assert out["cu_seqlens"].tolist() == [0, 3, 8, 13, 16]
    assert out["max_length"] == 5
    document = collate_segments(batch, DOCUMENT, BOS)
    assert document["input_ids"][0, 0] == 10  # no anchor in document mode


def test_padding_stays_out_of_the_loss():
    out = collate_segments([item(5, 8, [0, 2])], DOCUMENT, BOS)
    assert out["labels"][0, 5:].tolist() == [-100] * 3
    assert out["segment_ids"][0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2]


def test_anchor_needs_a_bos():
    with pytest.raises(ValueError, match="BOS"):
        collate_segments([item(8, 8, [0])], ANCHOR, None)


def test_a_window_read_with_one_more_token_has_a_target_at_every_position():
    import numpy as np

    from dprope.data.dataset import as_item
    from dprope.data.packing import PackedSequence
    from dprope.data.segments import collate_causal

    tokens = np.array([BOS, 11, 12, BOS, 14, 15, 16, BOS, 18], dtype=np.int64)  # a window of 8 + 1 tokens
    full = as_item(PackedSequence(tokens, np.array([0, 3, 7]), 9), inputs=8)
    assert full["input_ids"].tolist() == tokens[:8].tolist() and full["next_token"] == 18
    assert full["doc_starts"].tolist() == [0, 3, 7] and full["length"] == 8
    padded = np.array([BOS, 11, 12, BOS, 14, 0, 0, 0, 0], dtype=np.int64)  # a kept tail of 5 tokens
    tail = as_item(PackedSequence(padded, np.array([0, 3]), 5), inputs=8)
    assert tail["next_token"] == -100 and tail["length"] == 5
    for collate in (collate_causal, lambda b: collate_segments(b, ANCHOR, BOS)):
        out = collate([full, tail])
        # T targets: token t + 1 for every position, the extra token for the last; none on padding
        assert out["shift_labels"][0].tolist() == [11, 12, BOS, 14, 15, 16, BOS, 18]
        assert out["shift_labels"][1].tolist() == [11, 12, BOS, 14, -100, -100, -100, -100]
    assert "shift_labels" not in collate_causal([item(8, 8, [0])])  # T - 1 targets: the model shifts labels
