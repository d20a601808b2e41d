"""Fused training kernels (`trainer.kernels`): Liger-Kernel, a model transform applied before
DeepSpeed wraps the model (`dprope.train.transforms`).

`liger` applies Liger-Kernel (Hsu et al., 2024) to the model instance through its family's own
entry point (``apply_liger_kernel_to_llama``, ``_mistral``, ``_qwen2``: `dprope.model.FAMILIES`;
a family without one is refused in one line before the model loads): the fused linear
cross-entropy computes the loss chunk by chunk from the last hidden states and `lm_head`, so the
full ``(batch, seq, vocab)`` logits, upcast to float32 by HF's loss (about 2 GiB at 16k tokens
and a 32k vocabulary, twice that with its gradient), are never materialised; RMSNorm and SwiGLU
are fused Triton kernels. The lm_head gradient is accumulated over the loss's chunks in float32
(Liger's ``accum_dtype``; by default it would be the weight's bf16). The fused loss reads the
number of scored tokens back to the host (``.item()``) on every forward: one host sync per
micro-step, besides the optimizer step's own.

Liger's RoPE kernel is not applied: it rotates q and k in the dtype of the cos/sin it is handed
(bf16 under bf16 training), in a Triton kernel whose agreement with HF's rotation is not checked
here. HF's rotation stays, with angles computed in float32 from the strategy's frequencies
(docs/method-notes.md, section 8); the GPU tests check those frequencies after the kernels are applied.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import sys
import types

import torch

from dprope import accelerator
from dprope.config import ConfigError, first_line
from dprope.instance_patch import with_globals

log = logging.getLogger(__name__)

# Liger's fused linear cross-entropy, RMSNorm and SwiGLU; its RoPE stays off (see the module docstring).
LIGER_OPTIONS = {
    "rope": False,
    "cross_entropy": False,
    "fused_linear_cross_entropy": True,
    "rms_norm": True,
    "swiglu": True,
}


# The lm_head gradient of the fused loss is summed chunk by chunk; unless told otherwise Liger
# sums it in the weight's dtype (bf16, 8 significant bits, under bf16 training).
LOSS_ACCUM_DTYPE = torch.float32
# what Liger's model forwards call with the loss's keyword arguments (``accum_dtype`` among them):
# the Llama-family forward goes through lce_maybe_trainable_lm_head, others call the loss directly
LOSS_CALLS = ("lce_maybe_trainable_lm_head", "LigerForCausalLMLoss")


def liger_import_error() -> str | None:
    """Why Liger-Kernel cannot be imported here, or None when it can."""
    try:
        importlib.import_module("liger_kernel.transformers")
    except Exception as err:  # a missing package, or triton failing without a GPU toolchain
        return first_line(err)
    return None


def liger_entry_point(model_type: str) -> str | None:
    """The name of Liger-Kernel's ``apply_liger_kernel_to_<family>`` for a supported family
    (`dprope.model.FAMILIES`), or None where it has none."""
    from dprope.model import FAMILIES

    family = FAMILIES.get(model_type)
    return family.liger if family is not None else None


def resolve_kernels(requested: str, model_type: str, long_context: bool = False) -> str:
    """``liger`` or ``none``; ``liger`` where it cannot run is a one-line error (before the model loads).

    ``auto`` is liger when the family has a Liger entry point (`liger_entry_point`), CUDA is
    present and the package imports.
    ``long_context`` (sequence parallelism or tiled compute, `dprope.train.long_context`): those
    bring DeepSpeed's own tiled logits-loss, which Liger's fused loss would replace untested.
    """
    if requested == "none":
        return "none"
    problem = None if accelerator.on_cuda() else "needs a CUDA GPU"
    if liger_entry_point(model_type) is None:
        from dprope.model import FAMILIES

        with_kernels = [name for name, family in FAMILIES.items() if family.liger]
        problem = (
            f"has no kernels for model type {model_type!r} (families with them: {', '.join(with_kernels)})"
        )
    if long_context:
        problem = "is not combined with sequence_parallel_size > 1 or tiled_compute (DeepSpeed's tiled loss)"
    if problem is None:
        error = liger_import_error()
        if error is not None:
            problem = f"needs the liger-kernel package (pip install -e .[gpu]): {error}"
    if problem is None:
        return "liger"
    if requested == "liger":
        raise ConfigError("trainer.kernels", f"liger {problem}; use none (or auto)")
    log.info("kernels: none (liger %s)", problem)
    return "none"


@contextlib.contextmanager
def _instance_only(model: torch.nn.Module):
    """Undo what Liger's apply function writes into the modelling module (classes, functions) once
    the instance is patched, so models built later in the process stay plain HF."""
    module = sys.modules[type(model).__module__]
    saved = dict(vars(module))
    saved_forward = type(model).__dict__.get("forward")
    try:
        yield
    finally:
        for name, value in saved.items():
            if vars(module).get(name) is not value:
                setattr(module, name, value)
        if saved_forward is not None and type(model).__dict__.get("forward") is not saved_forward:
            type(model).forward = saved_forward


def accumulate_loss_gradients_in(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Give the instance's fused-loss forward (Liger's ``lce_forward``, bound to the instance) a
    copy whose loss calls pass ``accum_dtype=dtype``: the lm_head gradient is then summed over
    the loss's chunks in ``dtype`` instead of the weight's dtype (bf16 under bf16 training).
    Returns False, changing nothing, when the forward makes none of those calls."""
    bound = vars(model).get("forward")
    function = getattr(bound, "__func__", None)
    code = getattr(function, "__code__", None)
    names = [name for name in LOSS_CALLS if code is not None and name in code.co_names]
    if not names:
        return False
    loss_calls = {name: functools.partial(function.__globals__[name], accum_dtype=dtype) for name in names}
    model.forward = types.MethodType(with_globals(function, loss_calls), model)
    return True


def apply_liger(model: torch.nn.Module, zero_stage: int) -> str:
    """Apply Liger-Kernel to this ``model`` instance with its family's entry point (before
    `deepspeed.initialize`), its loss accumulating the lm_head gradient in float32
    (`LOSS_ACCUM_DTYPE`); returns what it applied, for the log."""
    import deepspeed
    import liger_kernel.transformers

    entry_point = liger_entry_point(model.config.model_type)
    with _instance_only(model):
        getattr(liger_kernel.transformers, entry_point)(model=model, **LIGER_OPTIONS)
    if not accumulate_loss_gradients_in(model, LOSS_ACCUM_DTYPE):
        raise RuntimeError(
            f"Liger's fused loss of {type(model).__name__} makes none of the calls {LOSS_CALLS}: "
            "its gradient accumulation dtype cannot be set"
        )
    if zero_stage == 3:
        # the fused loss reads lm_head.weight inside the model's forward without calling lm_head,
        # so ZeRO-3's per-module hooks would leave it partitioned (empty): let the top module
        # gather it for its forward and backward
        head = model.get_output_embeddings()
        deepspeed.zero.register_external_parameter(model, head.weight)
    kernels = ", ".join(k for k, on in LIGER_OPTIONS.items() if on)
    accum = str(LOSS_ACCUM_DTYPE).removeprefix("torch.")
    return f"liger {entry_point} ({kernels}; lm_head gradient accumulated in {accum})"
