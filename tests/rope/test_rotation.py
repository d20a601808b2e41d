"""Rotation precision: ``fp32`` rotates q/k in float32 and moves bf16 results toward float32 ones."""

from __future__ import annotations

import pytest
import torch

from dprope.rope.rotation import apply_rope_precision, rotate_in_float32


def exact_rotation(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in float64 from its definition: pair (i, i + d/2) rotated by the given angles."""
    half = x.shape[-1] // 2
    cos, sin = cos[..., :half].double(), sin[..., :half].double()
    x1, x2 = x[..., :half].double(), x[..., half:].double()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def test_float32_rotation_is_one_rounding_from_the_exact_one():
    from transformers.models.llama import modeling_llama

    torch.manual_seed(0)
    positions = torch.arange(8000, 8512)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 64, 2).float() / 64)
    q = torch.randn(1, 4, 512, 64).to(torch.bfloat16)
    angles = torch.cat([positions[:, None] * inv_freq] * 2, dim=-1)[None]  # float32, as transformers
    cos, sin = angles.cos(), angles.sin()
    exact = exact_rotation(q, cos[:, None], sin[:, None])  # the same float32 angles, no rounding after
    ours, _ = rotate_in_float32(q, q, cos, sin)
    default, _ = modeling_llama.apply_rotary_pos_emb(q, q, cos.to(torch.bfloat16), sin.to(torch.bfloat16))
    assert ours.dtype == torch.bfloat16
    error_fp32 = (ours.double() - exact).abs().mean()
    error_model = (default.double() - exact).abs().mean()
    # one bf16 rounding of the result (relative 2^-9 at most) against cos/sin rounded and every product too
    assert ((ours.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-30).all()
    assert error_fp32 < 0.75 * error_model
    # equal dtypes: transformers' own arithmetic
    same, _ = rotate_in_float32(q, q, cos.to(torch.bfloat16), sin.to(torch.bfloat16))
    assert torch.equal(same, default)


def test_shifted_positions_move_bf16_logits_and_fp32_rotation_moves_them_less(tiny_model_cfg):
    from transformers import AutoModelForCausalLM

    from dprope.rope.precision_analysis import PrecisionConfig, measure

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_model_cfg.hf_config()).eval()
    result = measure(model, PrecisionConfig(length=128, shift=4096, buckets=4), tiny_model_cfg.vocab_size)
    deviation = result.mean_logit_deviation
    assert deviation["bf16 / fp32 rotation"] < deviation["bf16 / model rotation"]
    assert deviation["float32"] < deviation["bf16 / fp32 rotation"] / 100
    assert len(result.logit_deviation["float32"]) == 4
    assert 0 <= result.first_token_share["float32"] <= 1


def test_fp32_rotation_gives_float32_cos_sin_and_keeps_the_activation_dtype(tiny_model_cfg):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_model_cfg.hf_config(), dtype=torch.bfloat16).eval()
    ids = torch.randint(3, 250, (1, 16))
    assert apply_rope_precision(model, "fp32") == 1
    assert apply_rope_precision(model, "fp32") == 1  # idempotent: the wrapper is not stacked
    cos, _ = model.model.rotary_emb(model.model.embed_tokens(ids), torch.arange(16)[None])
    assert cos.dtype == torch.float32
    with torch.no_grad():
        assert model(input_ids=ids).logits.dtype == torch.bfloat16


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="rope precision"):
        apply_rope_precision(torch.nn.Linear(2, 2), "bf16")
