"""The rotary geometry of a model: the numbers every strategy and every analysis start from
(docs/method-notes.md, section 1).

`RotaryGeometry` is built once per model preset (`dprope.model.ModelConfig.geometry`) and its
construction is the one place that checks those numbers; its errors name the preset's keys
(``model.head_dim``), wherever the geometry is built. Its `inv_freq` are the model's own
pre-training frequencies theta_i: the reference of every per-pair divisor lambda_i and of every
pre-training angle distribution.

Today every geometry is plain RoPE (``theta_i = base ** (-2i/d)`` over all ``head_dim``
dimensions). A model whose pre-training RoPE differs (a partial rotary factor, Llama-3.1's
``llama3``-scaled frequencies) adds its fields here, checked here, and changes `inv_freq` and
`num_pairs`: strategies and analyses already take their reference from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dprope.config import ConfigError


def exponents(head_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2i/d for i = 0 .. d/2-1, computed the way transformers does (int64 arange, then cast)."""
    return torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim


def default_inv_freq(head_dim: int, rope_theta: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """theta_i = base ** (-2i/d), shape (head_dim/2,). Equal to transformers' ``default`` rope type."""
    return 1.0 / (rope_theta ** exponents(head_dim, dtype))


def target_length(original_length: int, factor: float) -> int:
    """The extended context L' = s * L (rounded to a whole number of positions)."""
    return int(round(original_length * factor))


@dataclass(frozen=True)
class RotaryGeometry:
    """A model's rotary numbers, checked on construction."""

    head_dim: int  # d: rotary dimensions per attention head (model.head_dim)
    rope_theta: float  # RoPE base (model.rope_theta)
    original_length: int  # L: pre-training context (model.original_max_position_embeddings)

    def __post_init__(self) -> None:
        if not (isinstance(self.head_dim, int) and self.head_dim > 0 and self.head_dim % 2 == 0):
            raise ConfigError("model.head_dim", f"must be a positive even number (got {self.head_dim})")
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 1):
            raise ConfigError("model.rope_theta", f"must be a finite number > 1 (got {self.rope_theta})")
        object.__setattr__(self, "rope_theta", float(self.rope_theta))
        if not (isinstance(self.original_length, int) and self.original_length > 0):
            raise ConfigError(
                "model.original_max_position_embeddings", f"must be positive (got {self.original_length})"
            )

    @property
    def num_pairs(self) -> int:
        """Rotary pairs i = 0 .. d/2-1, each rotating dimensions 2i and 2i+1."""
        return self.head_dim // 2

    def inv_freq(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The pre-training frequencies theta_i, shape (num_pairs,): float32 as a model computes
        them, float64 for the exact mathematics."""
        return default_inv_freq(self.head_dim, self.rope_theta, dtype)

    def target_length(self, factor: float) -> int:
        """L' = s * L positions."""
        return target_length(self.original_length, factor)
