"""What a collated batch (`dprope.data.collate_packed`) passes to the HF model's forward.

With flash-attn and one sequence per micro-batch, transformers finds packed sequences by reading
``position_ids`` back from the GPU in every layer (`_is_packed_sequence`: a host sync per layer)
unless it is handed the varlen arguments. So the cumulative sequence lengths the collate
function built on the CPU go in as ``cu_seq_lens_q/k`` and ``max_length_q/k`` (transformers'
`FlashAttentionKwargs`, the max lengths as Python ints): the varlen kernel takes them as they
are, nothing is inferred per layer. SDPA and eager attention ignore them (each row is one causal
segment there anyway). What remains is transformers' mask builder, which looks at
``position_ids`` once per forward.
"""

from __future__ import annotations

from typing import Any

import torch


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The forward's keyword arguments for one micro-batch, on ``device`` (copies only, no value
    read back)."""
    inputs = {
        name: batch[name].to(device, non_blocking=True)
        for name in ("input_ids", "labels", "position_ids")
        if batch.get(name) is not None
    }
    if batch.get("cu_seqlens") is not None:
        cu_seqlens = batch["cu_seqlens"].to(device, non_blocking=True)  # (segments + 1,) int32
        inputs.update(
            cu_seq_lens_q=cu_seqlens,
            cu_seq_lens_k=cu_seqlens,
            max_length_q=batch["max_length"],
            max_length_k=batch["max_length"],
        )
    return inputs
