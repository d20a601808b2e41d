"""Model transforms: the ordered, instance-scoped changes a run makes to its model.

The plan (`dprope.train.plan`) lists them in order; materialising it (`dprope.train.engine`)
applies those of phase `BEFORE_WRAP` to the freshly built HF model, wraps it with
`deepspeed.initialize`, then applies those of phase `AFTER_WRAP` to the wrapped module, and logs
what each did in one line. In order:

1. `RopePrecision`: q and k rotated in float32 (``trainer.rope_precision=fp32``, `dprope.rope.rotation`);
2. `ActivationCheckpointing`: recompute activations in backward (``trainer.gradient_checkpointing``);
3. `LigerKernels`: Liger's fused loss, RMSNorm and SwiGLU (``trainer.kernels``, `dprope.train.liger`);
4. `UlyssesAttention`: Ulysses sequence parallelism (``trainer.sequence_parallel_size``);
5. `TiledMLP`: DeepSpeed's TiledMLP in every MLP (``trainer.tiled_compute``);
   -- the DeepSpeed wrap --
6. `FinalHiddenCapture`: the final norm's output for the tiled loss (after the wrap: ZeRO-3's own
   hooks come first, so the captured output is the one whose backward gathers the norm's
   partitioned weight again);
7. `RotaryFrequencies`: the strategy's float32 frequencies put back in every rotary module (after
   the wrap: DeepSpeed's bf16 cast of module buffers must never reach the angles).

Every transform changes the model instance it is given, never a library module for the whole
process (`dprope.instance_patch`): a model built later in the same process is plain transformers.
A transform keeps no state of its own, so a plan can be materialised more than once; what it hands
on (DeepSpeed's SP groups, the captured hidden states) goes into the `ModelParts` of that
materialisation. A new transform is one class here and one line in `model_transforms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dprope.rope.rotation import apply_rope_precision
from dprope.train.config import TrainerConfig

BEFORE_WRAP = "before the wrap"
AFTER_WRAP = "after the wrap"


@dataclass
class ModelParts:
    """What the transforms of one materialisation hand on to the wrap and to the micro-step."""

    mpu: Any = None  # DeepSpeed's sequence-parallel groups, for deepspeed.initialize (Ulysses)
    sp_group: Any = None  # this rank's sequence-parallel process group (Ulysses)
    final_hidden: list | None = None  # the final norm's output of each forward (tiled loss)


class ModelTransform:
    """One instance-scoped change of the model; ``apply`` returns what it did, for the log."""

    phase = BEFORE_WRAP

    def apply(self, model: torch.nn.Module, parts: ModelParts) -> str:
        raise NotImplementedError


class RopePrecision(ModelTransform):
    """Queries and keys rotated in float32 with float32 cos/sin, cast back (`dprope.rope.rotation`)."""

    def apply(self, model, parts):
        return f"rotation in float32 ({apply_rope_precision(model, 'fp32')} rotary module(s))"


class ActivationCheckpointing(ModelTransform):
    """Recompute each decoder layer's activations in backward (non-reentrant checkpointing)."""

    def apply(self, model, parts):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        return "activation checkpointing"


class LigerKernels(ModelTransform):
    """Liger-Kernel's fused linear cross-entropy, RMSNorm and SwiGLU (`dprope.train.liger`)."""

    def __init__(self, zero_stage: int):
        self.zero_stage = zero_stage

    def apply(self, model, parts):
        from dprope.train.liger import apply_liger

        return apply_liger(model, self.zero_stage)


class UlyssesAttention(ModelTransform):
    """Ulysses sequence parallelism over ``size`` ranks around the ``implementation`` kernel
    (`dprope.train.long_context.register_sequence_parallel`); hands on DeepSpeed's ``mpu``.
    ``keep_masks``: the attention mode's whole-window masks reach the kernel (document, anchor)."""

    def __init__(self, implementation: str, size: int, micro_batch_size: int, keep_masks: bool = False):
        self.implementation, self.size, self.micro_batch_size = implementation, size, micro_batch_size
        self.keep_masks = keep_masks

    def apply(self, model, parts):
        from dprope.train.long_context import register_sequence_parallel

        parts.mpu, routed = register_sequence_parallel(
            model, self.implementation, self.size, self.micro_batch_size, self.keep_masks
        )
        parts.sp_group = parts.mpu.get_sequence_parallel_group()
        masks = ", the window's masks kept" if self.keep_masks else ""
        return f"Ulysses sequence parallel x{self.size} in {routed} attention module(s){masks}"


class TiledMLP(ModelTransform):
    """DeepSpeed's TiledMLP in every gated MLP, ``shards`` tiles (None: tiles of hidden_size tokens)."""

    def __init__(self, shards: int | None):
        self.shards = shards

    def apply(self, model, parts):
        from dprope.train.long_context import apply_tiled_mlp

        return f"tiled MLP in {apply_tiled_mlp(model, self.shards)} module(s)"


class FinalHiddenCapture(ModelTransform):
    """Keep the final norm's output of every forward, for the tiled logits-loss."""

    phase = AFTER_WRAP

    def apply(self, model, parts):
        from dprope.train.long_context import capture_final_hidden

        parts.final_hidden = []
        capture_final_hidden(model, parts.final_hidden)
        return "final hidden states captured"


def rotary_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every module holding rotary frequencies (`inv_freq`)."""
    return [m for m in module.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]


def restore_rotary_frequencies(module: torch.nn.Module, inv_freq: torch.Tensor) -> int:
    """Put the strategy's float32 frequencies back into every rotary module; returns how many.

    Besides ``inv_freq`` and ``original_inv_freq``, a ``longrope`` module (the DPRoPE export)
    gets ``long_inv_freq``: transformers' ``longrope_frequency_update`` copies it into
    ``inv_freq`` on every forward beyond the original length, and computes it itself, on the
    input's device, when it is missing; a GPU's rounding of that computation would then replace
    the strategy's frequencies after the first long forward. Short and long factors are equal in
    the export, so both sets are the strategy's.
    """
    modules = rotary_modules(module)
    for rotary in modules:
        frequencies = inv_freq.to(device=rotary.inv_freq.device, dtype=torch.float32)
        rotary.register_buffer("inv_freq", frequencies.clone(), persistent=False)
        if hasattr(rotary, "original_inv_freq"):
            rotary.original_inv_freq = frequencies.clone()
        if getattr(rotary, "rope_type", None) == "longrope":
            rotary.long_inv_freq = frequencies.clone()
    return len(modules)


class RotaryFrequencies(ModelTransform):
    """The strategy's float32 ``inv_freq`` back in every rotary module, after DeepSpeed's cast."""

    phase = AFTER_WRAP

    def __init__(self, inv_freq: torch.Tensor):
        self.inv_freq = inv_freq

    def apply(self, model, parts):
        return f"rotary frequencies restored in float32 in {restore_rotary_frequencies(model, self.inv_freq)} module(s)"


def model_transforms(
    trainer: TrainerConfig, inv_freq: torch.Tensor, implementation: str, kernels: str
) -> tuple[ModelTransform, ...]:
    """The ordered transforms of a run, from its checked choices (`dprope.train.plan`)."""
    transforms: list[ModelTransform] = []
    if trainer.rope_precision == "fp32":
        transforms.append(RopePrecision())
    if trainer.gradient_checkpointing:
        transforms.append(ActivationCheckpointing())
    if kernels == "liger":
        transforms.append(LigerKernels(trainer.zero_stage))
    if trainer.sequence_parallel_size > 1:
        from dprope.train.attention import ATTENTION_MODES

        masked = ATTENTION_MODES[trainer.attention].masked
        transforms.append(
            UlyssesAttention(implementation, trainer.sequence_parallel_size, trainer.micro_batch_size, masked)
        )
    if trainer.tiled_compute:
        transforms += [TiledMLP(trainer.tiled_shards), FinalHiddenCapture()]
    transforms.append(RotaryFrequencies(inv_freq))
    return tuple(transforms)


def apply_transforms(
    model: torch.nn.Module, transforms: tuple[ModelTransform, ...], phase: str, parts: ModelParts
) -> list[str]:
    """Apply the transforms of ``phase``, in order; returns what each did."""
    return [t.apply(model, parts) for t in transforms if t.phase == phase]
