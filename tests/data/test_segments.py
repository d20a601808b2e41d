"""Flash-attn varlen segments built on the CPU by the collate function."""

from __future__ import annotations

import torch

from dprope.data import collate_packed, cumulative_lengths


def test_causal_rows_are_one_segment_each():
    cu_seqlens, max_length = cumulative_lengths([[0], [0], [0]], 5)
    assert cu_seqlens.tolist() == [0, 5, 10, 15]
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.device.type == "cpu"
    assert max_length == 5 and isinstance(max_length, int)


def test_document_starts_cut_rows_into_segments():
    # row 0: documents at 0 and 3; row 1 starts mid-document, a new one begins at 2
    cu_seqlens, max_length = cumulative_lengths([[0, 3], [2]], 6)
    assert cu_seqlens.tolist() == [0, 3, 6, 8, 12]
    assert max_length == 4


def test_duplicate_and_out_of_row_starts_are_ignored():
    cu_seqlens, max_length = cumulative_lengths([[0, 0, 6, -1, 4, 4]], 6)
    assert cu_seqlens.tolist() == [0, 4, 6]
    assert max_length == 4


def test_collate_gives_each_sequence_its_own_segment():
    length = 7
    items = [
        {"input_ids": torch.arange(length), "doc_starts": torch.tensor([0, 3])},
        {"input_ids": torch.arange(length) + 10, "doc_starts": torch.tensor([2]), "length": 5},
    ]
    batch = collate_packed(items)
    assert batch["cu_seqlens"].tolist() == [0, length, 2 * length]
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["max_length"] == length and isinstance(batch["max_length"], int)
    assert batch["labels"][1, 5:].tolist() == [-100, -100]
