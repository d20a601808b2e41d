"""Document-masked attention in the model: which kernel, and the inputs it takes.

The collate function (`dprope.data.segments.collate_documents`) builds the positions, the
segment ids and flash-attn's cumulative lengths on the CPU. Here they become what the chosen
attention implementation of transformers reads:

- ``flash_attention_2``: flash-attn's varlen kernel over the flattened batch, given
  ``cu_seq_lens_q/k`` and ``max_length_q/k`` (no mask is materialised);
- ``flex_attention``: a FlexAttention ``BlockMask`` (causal and same segment); fully masked
  blocks are skipped, so the cost follows the visible pairs;
- ``sdpa`` / ``eager``: an explicit (batch, 1, seq, seq) mask, boolean for SDPA and additive for
  eager; it costs O(seq^2) memory, the fallback that runs on CPU.

With one segment per row (``causal``), nothing is added: transformers' own causal path runs.
"""

from __future__ import annotations

from typing import Any

import torch

from dprope.data.segments import ATTENTION_MODES

KERNELS = {
    "flash_attention_2": "flash-attn varlen (cu_seqlens from the collate)",
    "flex_attention": "FlexAttention block mask",
    "sdpa": "SDPA with an explicit document mask",
    "eager": "eager attention with an explicit document mask",
}


def kernel_description(mode: str, implementation: str) -> str:
    """What computes the attention, as logged at start-up."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}")
    if mode == "causal":
        return f"{implementation} (causal over the window)"
    return f"{mode}: {KERNELS[implementation]}"


def document_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(batch, 1, seq, seq) boolean: query q sees key k when k <= q and both share a segment."""
    seq = segment_ids.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (batch, q, k)
    return (same & causal)[:, None]


def document_block_mask(segment_ids: torch.Tensor):
    """The FlexAttention `BlockMask` of `document_mask`, built on the segment ids' device."""
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(b, h, q, k):
        return (segment_ids[b, q] == segment_ids[b, k]) & (k <= q)

    batch, seq = segment_ids.shape
    return create_block_mask(visible, batch, None, seq, seq, device=segment_ids.device)


def model_inputs(
    batch: dict[str, Any], implementation: str, device: torch.device, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """The keyword arguments of the model's forward for one collated micro-batch.

    ``dtype`` is the activations' (the additive mask of eager attention must match it).
    """
    inputs = {
        name: batch[name].to(device, non_blocking=True) for name in ("input_ids", "labels", "position_ids")
    }
    segment_ids = batch.get("segment_ids")
    if segment_ids is None or implementation == "flash_attention_2":
        # the segments the collate function built on the CPU (one per row in causal mode): with
        # them flash-attn's varlen kernel needs nothing read back from the GPU in any layer
        # (transformers' FlashAttentionKwargs; SDPA and eager ignore them)
        if batch.get("cu_seqlens") is not None:
            cu = batch["cu_seqlens"].to(device, non_blocking=True)  # (segments + 1,) int32
            length = batch["max_length"]  # a Python int: a device tensor would be read per layer
            inputs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=length, max_length_k=length)
        return inputs
    segment_ids = segment_ids.to(device)
    if implementation == "flex_attention":
        inputs["attention_mask"] = document_block_mask(segment_ids)
    elif implementation == "sdpa":
        inputs["attention_mask"] = document_mask(segment_ids)
    elif implementation == "eager":
        visible = document_mask(segment_ids)
        additive = torch.zeros(visible.shape, dtype=dtype, device=device)
        inputs["attention_mask"] = additive.masked_fill(~visible, torch.finfo(dtype).min)
    else:
        raise ValueError(f"no document mask for attention implementation {implementation!r}")
    return inputs


def visible_pairs(segment_ids: torch.Tensor) -> int:
    """Query-key pairs a document mask lets through: sum over segments of n (n + 1) / 2."""
    _, counts = torch.unique_consecutive(
        segment_ids + torch.arange(segment_ids.shape[0])[:, None] * (int(segment_ids.max()) + 1),
        return_counts=True,
    )
    return int((counts * (counts + 1) // 2).sum())
