"""Document segments of a packed window: positions, segment ids and cumulative lengths.

The attention modes that attend within documents (``trainer.attention``, registered in
`dprope.train.attention`) each declare a `SegmentLayout`; the collate function `collate_segments`
builds it on the CPU from the packed ``doc_starts`` (`dprope.data.packing`), never by re-packing.
``causal`` needs none of this: one segment per window, positions ``0 .. T-1`` (`collate_packed`).

- `DOCUMENT`: a token attends only to earlier tokens of its own document; positions restart at
  0 at every document start. A window that begins inside a document treats the continuation as
  a document of its own (positions from 0).
- `ANCHOR`: AnchorAttention (Wang et al. 2024, "When Precision Meets Position", section 4; the
  flash-attention path of their public code). Every document segment begins with the BOS token,
  the anchor, at position id 0; the other tokens keep their window positions (positions run on
  across documents, they do not restart); attention is causal within each segment. A BOS at
  position 0 that is the first token of its segment attends only to itself, so every copy of it
  computes the same keys and values in every layer: all documents see one shared anchor, as in
  their FlexAttention path (one anchor prepended, visible to every token). A window that begins
  inside a document (``data.packing=stream``) gets the anchor too: its first token is replaced
  by BOS, so the continuation loses one token of context. The authors' packing
  (``data.packing=pieces``, the default of ``trainer.attention=anchor``) puts a BOS in front of a
  continued piece instead, so every window already begins with one.

Padding after a kept tail's ``length`` is a segment of its own (it never sees real tokens and
no real token sees it; its labels are -100 anyway).

Targets: ``labels`` are the input ids (the model shifts them: T - 1 targets per window). Items
read with one more token (``data.extra_target``, the AnchorAttention authors' convention) carry
``next_token``, and every collate here then adds ``shift_labels`` (batch, seq): the target of
each position, the last one included (T targets), which the model's loss takes as they are
(`next_token_targets`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dprope.data.sampler import collate_packed

IGNORE_INDEX = -100


def segment_bounds(doc_starts: torch.Tensor, length: int, max_length: int) -> list[int]:
    """Start of every segment of a window, then ``max_length``: the documents' starts, 0 (a
    continuation, or the first document) and ``length`` when padding follows."""
    starts = {0, *(int(s) for s in doc_starts if 0 <= int(s) < length)}
    if length < max_length:
        starts.add(length)
    return [*sorted(starts), max_length]


def restarting_positions(bounds: list[int], length: int, max_length: int) -> torch.Tensor:
    """Positions from 0 in every segment."""
    lengths = torch.tensor(bounds[1:]) - torch.tensor(bounds[:-1])
    return torch.arange(max_length) - torch.repeat_interleave(torch.tensor(bounds[:-1]), lengths)


def anchor_positions(bounds: list[int], length: int, max_length: int) -> torch.Tensor:
    """The window's positions, except 0 at the first token (the anchor) of every segment of real
    tokens."""
    positions = torch.arange(max_length)
    positions[[b for b in bounds[:-1] if b < length]] = 0
    return positions


@dataclass(frozen=True)
class SegmentLayout:
    """How an attention mode lays out a packed window's segments."""

    positions: Callable[[list[int], int, int], torch.Tensor]  # (bounds, length, max_length) -> (max_length,)
    anchored: bool  # every segment starts with BOS: a window that begins inside a document gets one


DOCUMENT = SegmentLayout(restarting_positions, anchored=False)
ANCHOR = SegmentLayout(anchor_positions, anchored=True)


def window_layout(
    doc_starts: torch.Tensor, length: int, max_length: int, layout: SegmentLayout
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(position_ids, segment_ids, needs_anchor)`` of one window, each ``(max_length,)``.

    ``needs_anchor`` is true for an anchored layout when the window begins inside a document: its
    first token must become the anchor (BOS).
    """
    bounds = segment_bounds(doc_starts, length, max_length)
    lengths = torch.tensor(bounds[1:]) - torch.tensor(bounds[:-1])
    segment_ids = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    needs_anchor = layout.anchored and not any(int(s) == 0 for s in doc_starts)
    return layout.positions(bounds, length, max_length), segment_ids, needs_anchor


def cu_seqlens(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cumulative segment lengths of the flattened batch (int32, starting at 0, ending at B x T)
    and the longest segment, as flash-attn's varlen kernels take them.

    ``segment_ids``: (batch, seq), non-decreasing along each row. Rows never share a segment.
    """
    batch, seq = segment_ids.shape
    new = torch.ones_like(segment_ids, dtype=torch.bool)
    new[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    starts = new.reshape(-1).nonzero().flatten()
    bounds = torch.cat([starts, torch.tensor([batch * seq])]).to(torch.int32)
    return bounds, int((bounds[1:] - bounds[:-1]).max())


def next_token_targets(out: dict[str, Any], batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add ``shift_labels`` (batch, seq) when the items carry ``next_token``: position t's target
    is label t + 1 (-100 on padding), the last position's the item's ``next_token``."""
    if "next_token" not in batch[0]:
        return out
    labels = out["labels"]  # (batch, seq): the input ids, -100 after a kept tail's length
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    targets[:, -1] = torch.tensor([item["next_token"] for item in batch])
    out["shift_labels"] = targets
    return out


def collate_causal(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`collate_packed` (one causal segment per window), with `next_token_targets`."""
    return next_token_targets(collate_packed(batch), batch)


def collate_segments(
    batch: Sequence[dict[str, Any]], layout: SegmentLayout, bos_id: int | None
) -> dict[str, Any]:
    """`collate_packed` for attention within segments: the positions of ``layout``, the anchor
    put at the start of windows that begin inside a document (anchored layouts), ``segment_ids``
    (batch, seq) for masks, and flash-attn's ``cu_seqlens``/``max_length`` (built here, on the
    CPU, so the step needs no host sync)."""
    if layout.anchored and bos_id is None:
        raise ValueError("an anchored layout needs a BOS token id")
    out = collate_packed(batch)
    seq = out["input_ids"].shape[1]
    segment_rows = []
    for row, item in enumerate(batch):
        length = item.get("length", seq)
        positions, segments, needs_anchor = window_layout(item["doc_starts"], length, seq, layout)
        out["position_ids"][row] = positions
        if needs_anchor:
            out["input_ids"][row, 0] = bos_id
            out["labels"][row, 0] = bos_id  # never a target: the model shifts labels left
        segment_rows.append(segments)
    out["segment_ids"] = torch.stack(segment_rows)  # (batch, seq)
    out["cu_seqlens"], out["max_length"] = cu_seqlens(out["segment_ids"])
    return next_token_targets(out, batch)
