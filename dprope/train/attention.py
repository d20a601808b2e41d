"""Attention modes (``trainer.attention``): one registry, `ATTENTION_MODES`.

Each mode declares what the rest of the trainer asks of it:

- ``collate(bos_id)``: the collate function of its micro-batches (built on the CPU);
- ``needs_bos``: its documents must be packed with a BOS token (``data.add_bos``) and the
  tokenizer must have one;
- ``packing``: the packing conventions its data takes where ``data`` leaves them null
  (`dprope.data.config.PackingConventions`: EOS, stream or pieces, the extra target);
- ``sequence_parallel``: whether it runs under Ulysses sequence parallelism;
- ``masked``: its masks say more than causality, so under sequence parallelism the step gives
  the whole window's masks and the Ulysses attention hands them to the kernel
  (`dprope.train.long_context.register_sequence_parallel`);
- ``auto_implementation(cuda)``: the kernel ``trainer.attn_implementation=auto`` picks when
  flash-attn is not there;
- ``inputs(batch, implementation, ...)``: the forward's keyword arguments for each kernel;
- ``masks(batch, implementation, ...)``: only its mask arguments, for a whole batch or, under
  sequence parallelism, for one rank's slice of it (the Ulysses and tiled micro-steps);
- ``describe(implementation)``: what computes the attention, as logged at start-up.

Modes that attend within segments (documents) take their masks per kernel from
`SegmentMasked.MASKS`:

- ``flash_attention_2``: flash-attn's varlen kernel over the flattened batch, given
  ``cu_seq_lens_q/k`` and ``max_length_q/k`` (no mask is materialised);
- ``flex_attention``: a FlexAttention ``BlockMask`` (causal and same segment); fully masked
  blocks are skipped, so the cost follows the visible pairs;
- ``sdpa`` / ``eager``: an explicit (batch, 1, seq, seq) mask, boolean for SDPA and additive for
  eager; it costs O(seq^2) memory, the fallback that runs on CPU.

Under Ulysses sequence parallelism (``trainer.sequence_parallel_size`` > 1) each rank holds a
slice of every window, but attention runs after an all-to-all over the whole window: the masks
are the whole window's. The collate's ``cu_seqlens`` travel whole through DeepSpeed's loader
adapter (`dprope.train.long_context.sp_loader`, as ``window_cu_seqlens``), every rank rebuilds
the window's segment ids from them, and the step passes the whole-window mask (or flash-attn's
varlen offsets) with its slice of the tokens; position ids are sliced with the tokens, so every
token keeps its rotary position. This is how the AnchorAttention authors run it under
DeepSpeed-Ulysses: the rotary positions local, the segment boundaries global.

A new mode is one class here (or in a file of its own) and one line of `ATTENTION_MODES`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch

from dprope import accelerator
from dprope.config import ConfigError
from dprope.data.config import ANCHORCONTEXT, STANDARD, PackingConventions
from dprope.data.segments import ANCHOR, DOCUMENT, SegmentLayout, collate_causal, collate_segments

log = logging.getLogger(__name__)

Batch = dict[str, Any]
Collate = Callable[[list[dict[str, Any]]], Batch]


def _to(batch: Batch, device: torch.device) -> dict[str, Any]:
    # shift_labels: the next-token targets of every position, when the data reads one token more
    names = ("input_ids", "labels", "position_ids", "shift_labels")
    return {name: batch[name].to(device, non_blocking=True) for name in names if name in batch}


def window_segments(batch: Batch) -> tuple[Batch, torch.Tensor]:
    """The whole window's ``cu_seqlens``/``max_length`` and segment ids (batch, seq) of a batch:
    the collate's own, or, for one rank's slice under sequence parallelism, rebuilt from the
    ``window_cu_seqlens`` that travelled whole (on the CPU; no value read back from a device)."""
    if "window_cu_seqlens" not in batch:
        return batch, batch["segment_ids"]
    cu = torch.tensor(batch["window_cu_seqlens"], dtype=torch.int32)  # (segments + 1,)
    segment_ids = torch.repeat_interleave(torch.arange(len(cu) - 1), (cu[1:] - cu[:-1]).long())
    rows = batch["input_ids"].shape[0]
    return {"cu_seqlens": cu, "max_length": batch["max_length"]}, segment_ids.view(rows, -1)


def varlen_segments(batch: Batch, device: torch.device) -> dict[str, Any]:
    """transformers' FlashAttentionKwargs from the segments the collate built on the CPU: with
    them flash-attn's varlen kernel needs nothing read back from the GPU in any layer (SDPA and
    eager ignore them)."""
    if batch.get("cu_seqlens") is None:
        return {}
    cu = batch["cu_seqlens"].to(device, non_blocking=True)  # (segments + 1,) int32
    length = batch["max_length"]  # a Python int: a device tensor would be read per layer
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": length, "max_length_k": length}


def document_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(batch, 1, seq, seq) boolean: query q sees key k when k <= q and both share a segment."""
    seq = segment_ids.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (batch, q, k)
    return (same & causal)[:, None]


@functools.cache
def _compiled_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


def document_block_mask(segment_ids: torch.Tensor):
    """The FlexAttention `BlockMask` of `document_mask`, built on the segment ids' device.

    Built compiled, as transformers builds its own flex masks: the mask function is then
    evaluated block by block and the (batch, seq, seq) mask never exists, so building costs
    O(blocks) memory; eagerly, `create_block_mask` materialises it (about 10 bytes per query-key
    pair). Compiled once per shape."""

    def visible(b, h, q, k):
        return (segment_ids[b, q] == segment_ids[b, k]) & (k <= q)

    batch, seq = segment_ids.shape
    return _compiled_create_block_mask()(visible, batch, None, seq, seq, device=segment_ids.device)


def additive_document_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`document_mask` as eager attention adds it: 0 where visible, the dtype's minimum elsewhere."""
    visible = document_mask(segment_ids)
    additive = torch.zeros(visible.shape, dtype=dtype, device=segment_ids.device)
    return additive.masked_fill(~visible, torch.finfo(dtype).min)


def visible_pairs(segment_ids: torch.Tensor) -> int:
    """Query-key pairs a document mask lets through: sum over segments of n (n + 1) / 2."""
    _, counts = torch.unique_consecutive(
        segment_ids + torch.arange(segment_ids.shape[0])[:, None] * (int(segment_ids.max()) + 1),
        return_counts=True,
    )
    return int((counts * (counts + 1) // 2).sum())


class AttentionMode:
    """What a token may attend to in a packed window, and how each kernel is told."""

    name: str
    packing: PackingConventions = STANDARD  # conventions of its data where `data` leaves them null
    needs_bos = False  # packed with BOS, and the tokenizer must have one
    sequence_parallel = False  # runs under Ulysses sequence parallelism
    masked = False  # more than causal: under SP the whole window's masks reach the kernel

    def collate(self, bos_id: int | None) -> Collate:
        raise NotImplementedError

    def auto_implementation(self, cuda: bool) -> str:
        """The kernel of ``trainer.attn_implementation=auto`` when flash-attn cannot run."""
        return "sdpa"

    def inputs(
        self, batch: Batch, implementation: str, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> dict[str, Any]:
        """The keyword arguments of the model's forward for one collated micro-batch; ``dtype``
        is the activations' (an additive mask must match it)."""
        raise NotImplementedError

    def masks(
        self, batch: Batch, implementation: str, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> dict[str, Any]:
        """The forward's mask arguments only, for a micro-step that passes the tokens, positions
        and targets itself: of the whole batch, or of the whole window for a rank's slice under
        sequence parallelism (`window_segments`)."""
        raise NotImplementedError

    def describe(self, implementation: str) -> str:
        raise NotImplementedError


class Causal(AttentionMode):
    """One causal attention over the whole window (the paper's setting); positions 0 .. T-1."""

    name = "causal"
    sequence_parallel = True

    def collate(self, bos_id: int | None) -> Collate:
        return collate_causal

    def inputs(self, batch, implementation, device, dtype=torch.float32):
        # one segment per row: transformers' own causal path, plus the varlen offsets for flash-attn
        return {**_to(batch, device), **varlen_segments(batch, device)}

    def masks(self, batch, implementation, device, dtype=torch.float32):
        return {}  # causal from the positions, as DeepSpeed's Ulysses attention rebuilds it

    def describe(self, implementation: str) -> str:
        return f"{implementation} (causal over the window)"


class SegmentMasked(AttentionMode):
    """Attention within the segments of a `SegmentLayout` (`dprope.data.segments`)."""

    layout: SegmentLayout
    needs_bos = True
    sequence_parallel = True
    masked = True
    # kernel -> (description, the forward's mask arguments from the batch's segment ids)
    MASKS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
        "flash_attention_2": (
            "flash-attn varlen (cu_seqlens from the collate)",
            lambda batch, segment_ids, device, dtype: varlen_segments(batch, device),
        ),
        "flex_attention": (
            "FlexAttention block mask",
            lambda batch, segment_ids, device, dtype: {"attention_mask": document_block_mask(segment_ids)},
        ),
        "sdpa": (
            "SDPA with an explicit document mask",
            lambda batch, segment_ids, device, dtype: {"attention_mask": document_mask(segment_ids)},
        ),
        "eager": (
            "eager attention with an explicit document mask",
            lambda batch, segment_ids, device, dtype: {
                "attention_mask": additive_document_mask(segment_ids, dtype)
            },
        ),
    }

    def collate(self, bos_id: int | None) -> Collate:
        if bos_id is None:
            raise ConfigError(
                "model.tokenizer", f"trainer.attention={self.name} needs a tokenizer with a BOS token"
            )
        return functools.partial(collate_segments, layout=self.layout, bos_id=bos_id)

    def auto_implementation(self, cuda: bool) -> str:
        # a block mask skips the masked blocks, where SDPA would read a dense mask
        return "flex_attention" if cuda else "sdpa"

    def _mask(self, implementation: str):
        if implementation not in self.MASKS:
            raise ValueError(f"no {self.name} mask for attention implementation {implementation!r}")
        return self.MASKS[implementation]

    def inputs(self, batch, implementation, device, dtype=torch.float32):
        return {**_to(batch, device), **self.masks(batch, implementation, device, dtype)}

    def masks(self, batch, implementation, device, dtype=torch.float32):
        _, mask = self._mask(implementation)
        window, segment_ids = window_segments(batch)
        return mask(window, segment_ids.to(device), device, dtype)

    def describe(self, implementation: str) -> str:
        return f"{self.name}: {self._mask(implementation)[0]}"


class Document(SegmentMasked):
    """Each token sees earlier tokens of its own document; positions restart at every document."""

    name = "document"
    layout = DOCUMENT


class Anchor(SegmentMasked):
    """AnchorAttention: its own document and the shared anchor (BOS at position 0), on data packed
    as the authors pack it unless ``data`` says otherwise."""

    name = "anchor"
    layout = ANCHOR
    packing = ANCHORCONTEXT


ATTENTION_MODES: dict[str, AttentionMode] = {"causal": Causal(), "document": Document(), "anchor": Anchor()}


def resolve_implementation(requested: str, mode: AttentionMode) -> str:
    """The attention kernel transformers runs: ``requested``, or for ``auto`` flash_attention_2
    where it can run (`dprope.accelerator.flash_attn_problem`), else the mode's own choice, with
    the reason flash-attn could not run logged."""
    problem = accelerator.flash_attn_problem()
    if requested != "auto":
        if requested == "flash_attention_2" and problem is not None:
            raise ConfigError(
                "trainer.attn_implementation", f"flash_attention_2 needs flash-attn and a CUDA GPU: {problem}"
            )
        return requested
    if problem is None:
        return "flash_attention_2"
    chosen = mode.auto_implementation(accelerator.on_cuda())
    log.info("attention %s: %s (flash-attn not used: %s)", mode.name, chosen, problem)
    return chosen
