"""What a collated batch (`dprope.data.collate_packed`) passes to the HF model's forward.

With flash-attn, transformers finds packed sequences by reading ``position_ids`` on the GPU in
every layer (a host sync per layer) unless it is handed the varlen arguments. So the
cumulative sequence lengths built on the CPU by the collate function go in as
``cu_seq_lens_q/k`` and ``max_length_q/k`` (transformers' `FlashAttentionKwargs`): the kernel
reads them, nothing is inferred. SDPA and eager attention ignore them (each row is one causal
segment there anyway). ``position_ids`` are passed only when they are not the model's own
``0 .. T-1``, so the mask builder has nothing to inspect either.
"""

from __future__ import annotations

from typing import Any

import torch


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The forward's keyword arguments for one micro-batch, on ``device``; one small int32 copy
    of the segment offsets, no value read back."""
    input_ids = batch["input_ids"]
    inputs = {
        "input_ids": input_ids.to(device, non_blocking=True),
        "labels": batch["labels"].to(device, non_blocking=True),
    }
    position_ids = batch.get("position_ids")
    if position_ids is not None and not _default_positions(position_ids):
        inputs["position_ids"] = position_ids.to(device, non_blocking=True)
    if batch.get("cu_seqlens") is not None:
        cu_seqlens = batch["cu_seqlens"].to(device, non_blocking=True)
        inputs.update(
            cu_seq_lens_q=cu_seqlens,
            cu_seq_lens_k=cu_seqlens,
            max_length_q=batch["max_length"],
            max_length_k=batch["max_length"],
        )
    return inputs


def _default_positions(position_ids: torch.Tensor) -> bool:
    """True when every row is ``0 .. T-1`` (checked on the CPU tensor the collate built)."""
    return bool(torch.equal(position_ids, torch.arange(position_ids.shape[-1]).expand_as(position_ids)))
