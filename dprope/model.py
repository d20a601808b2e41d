"""Model presets: the rotary geometry every part needs, and the HF config a run builds on.

`ModelConfig` is the schema of `configs/model/*.yaml`. The RoPE analysis needs only its rotary
geometry (``head_dim``, ``rope_theta``, ``original_max_position_embeddings``, checked by
`dprope.rope.geometry.RotaryGeometry`), never weights; training loads
``pretrained`` (a hub id or a local directory) or, when it is null, initialises a random
Llama-family model from the architecture fields (the ``tiny`` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dprope.config import ConfigError
from dprope.rope.config import RopeConfig
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.registry import compute_scaling
from dprope.rope.strategies import RopeScaling


@dataclass
class ModelConfig:
    name: str = "tiny"  # display name, used in tables and run names
    pretrained: str | None = (
        None  # hub id or local directory of weights; null = random init from the fields below
    )
    tokenizer: str | None = None  # hub id, local directory, or 'byte' (built in); null = same as pretrained
    head_dim: int = 16  # rotary dimension per head (d)
    rope_theta: float = 10000.0  # RoPE base
    original_max_position_embeddings: int = 256  # pre-training context L
    hidden_size: int = 64  # model width (architecture fields: random init and FLOP counts)
    num_hidden_layers: int = 2  # decoder layers
    num_attention_heads: int = 4  # query heads (hidden_size = heads x head_dim for Llama)
    num_key_value_heads: int | None = None  # null = num_attention_heads (no GQA)
    intermediate_size: int = 128  # SwiGLU MLP width
    vocab_size: int = 260  # the built-in byte tokenizer's size for the tiny preset

    def __post_init__(self) -> None:
        _ = self.geometry  # building it checks the rotary numbers (errors name model.<field>)
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")
        if self.pretrained is None and self.tokenizer is None:
            raise ConfigError(
                "tokenizer", "must be set when pretrained is null (use 'byte' for the built-in one)"
            )

    @property
    def geometry(self) -> RotaryGeometry:
        """The rotary numbers every strategy and analysis start from (errors name ``model.<field>``)."""
        return RotaryGeometry(self.head_dim, self.rope_theta, self.original_max_position_embeddings)

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.pretrained  # type: ignore[return-value]

    def hf_config(self, rope: RopeConfig | None = None):
        """A `LlamaConfig` for random initialisation, with ``rope`` applied when given."""
        from transformers import LlamaConfig

        config = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads or self.num_attention_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.original_max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        if rope is not None:
            apply_rope(config, rope, self)
        return config

    def scaling(self, rope: RopeConfig) -> RopeScaling:
        """The strategy's result for this model's geometry; errors name ``rope.<field>`` or
        ``model.<field>``."""
        return compute_scaling(rope, self.geometry)


def apply_rope(hf_config: Any, rope: RopeConfig, model: ModelConfig) -> RopeScaling:
    """Set a HF Llama-family config's native ``rope_parameters`` and ``max_position_embeddings``
    (= s * L) for a strategy; returns the strategy's result.

    The config's own rotary geometry must match the preset's, or the exported frequencies would
    be those of another model.
    """
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    if head_dim != model.head_dim:
        raise ConfigError("model.head_dim", f"{model.head_dim} does not match the checkpoint's {head_dim}")
    scaling = model.scaling(rope)
    hf_config.rope_parameters = rope.export(scaling)
    hf_config.max_position_embeddings = scaling.target_length
    return scaling
