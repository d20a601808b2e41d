"""Rotation precision: where the rotary rotation of queries and keys is rounded.

transformers' Llama computes the angles ``position x inv_freq`` and their cos/sin in float32,
then casts cos/sin to the activation dtype and rotates q and k in that dtype
(``LlamaRotaryEmbedding.forward`` and ``apply_rotary_pos_emb`` in ``modeling_llama``). Under
bf16, cos/sin keep 8 bits of mantissa and every product of the rotation is rounded again, so
the attention logit of two tokens stops being a function of their distance alone (Wang et al.
2024, "When Precision Meets Position", section 3; docs/method-notes.md, section 9).

Two settings (``trainer.rope_precision`` / ``eval.rope_precision``):

- ``model``: transformers' default, untouched.
- ``fp32``: the rotary module returns cos/sin in float32, and the rotation upcasts q and k to
  float32, rotates them and casts the result back to their dtype: one rounding per rotated
  component instead of four.

The patch points, both on the model instance only (`dprope.instance_patch`; the modelling module
and models built later stay transformers' own): each rotary module's ``forward`` runs
transformers' own code with a float32 probe (it reads only the probe's device and dtype), and
each attention module gets a copy of its class's forward that calls `rotate_in_float32` where
it called ``apply_rotary_pos_emb``: transformers' arithmetic in float32 when cos/sin are float32,
transformers' function otherwise. The trainer applies it before ``deepspeed.initialize`` (a model
transform, `dprope.train.transforms`). Nothing is saved with the weights: an export loaded with
vanilla transformers rotates in its default precision.
"""

from __future__ import annotations

import types

import torch

from dprope.instance_patch import override_globals

ROPE_PRECISIONS = ("model", "fp32")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """transformers' rotation by 90 degrees of each (i, i + d/2) pair: (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_in_float32(q, k, cos, sin, unsqueeze_dim: int = 1):
    """``apply_rotary_pos_emb`` with transformers' signature; in float32 when cos/sin are float32.

    ``q``/``k``: (batch, heads, seq, head_dim); ``cos``/``sin``: (batch, seq, head_dim).
    The result has q's and k's own dtype.
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    if cos.dtype == torch.float32 and (q.dtype != torch.float32 or k.dtype != torch.float32):
        q32, k32 = q.float(), k.float()
        q_embed = q32 * cos + rotate_half(q32) * sin
        k_embed = k32 * cos + rotate_half(k32) * sin
        return q_embed.to(q.dtype), k_embed.to(k.dtype)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def _float32_rotary_forward(self, x, position_ids, *args, **kwargs):
    """The rotary module's own forward, given a float32 probe in place of the activations: its
    cos/sin come out in float32."""
    probe = torch.empty(0, dtype=torch.float32, device=x.device)  # cos/sin take the probe's dtype
    return type(self).forward(self, probe, position_ids, *args, **kwargs)


_float32_rotary_forward.dprope_rope_precision = "fp32"  # type: ignore[attr-defined]


def apply_rope_precision(model: torch.nn.Module, precision: str) -> int:
    """Set the rotation precision of ``model`` (this instance only); returns the rotary modules
    changed. Applying it twice changes nothing more.

    ``fp32`` on a model whose attention calls no transformers ``apply_rotary_pos_emb`` raises
    ValueError.
    """
    if precision not in ROPE_PRECISIONS:
        raise ValueError(f"rope precision must be one of {', '.join(ROPE_PRECISIONS)} (got {precision!r})")
    if precision == "model":
        return 0
    # same result as transformers' for equal dtypes; only float32 cos/sin take the new branch
    rotated = [m for m in model.modules() if override_globals(m, {"apply_rotary_pos_emb": rotate_in_float32})]
    if not rotated:
        raise ValueError(f"{type(model).__name__}: no transformers apply_rotary_pos_emb to patch")
    rotaries = [m for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    for rotary in rotaries:
        rotary.forward = types.MethodType(_float32_rotary_forward, rotary)
    return len(rotaries)
