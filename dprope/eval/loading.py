"""Load the model under evaluation: a trainer export, any HF causal-LM directory, or a hub id.

Checks run cheapest first, so a bad ``model.pretrained`` fails in a second with one line: the
path must exist and hold a ``config.json`` and weights; the checkpoint's config (not the preset)
gives ``max_position_embeddings``, the limit every benchmark's lengths are checked against
before the weights are read. Weights load in bf16 on CUDA (fp32 on CPU) with FlashAttention-2
when ``flash_attn`` imports on a CUDA device, else PyTorch SDPA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line, local_path
from dprope.data.tokenizer import load_tokenizer
from dprope.model import ModelConfig

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


@dataclass
class Checkpoint:
    """Where the model comes from and what its config says, before any weight is read."""

    name: str  # display name (model.name)
    source: str  # local directory or hub id
    tokenizer: str  # model.tokenizer, else source
    hf_config: Any  # the checkpoint's transformers config
    strategy: dict[str, Any] | None = None  # the trainer export's dprope.json (its RoPE strategy), if any

    @property
    def max_positions(self) -> int:
        return int(self.hf_config.max_position_embeddings)


def resolve_checkpoint(model: ModelConfig) -> Checkpoint:
    """Validate ``model.pretrained`` and read the checkpoint's config (no weights)."""
    from transformers import AutoConfig

    name = model.pretrained
    if not name:
        raise ConfigError("model.pretrained", "must be set to a model directory or hub id to evaluate")
    path = local_path(name)
    if path is not None:
        if not path.is_dir():
            raise ConfigError("model.pretrained", f"no model directory at {name}")
        if not (path / "config.json").is_file():
            raise ConfigError("model.pretrained", f"no config.json in {name}")
        if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
            raise ConfigError("model.pretrained", f"no weights (*.safetensors or *.bin) in {name}")
        source = str(path)
    else:
        source = name
    try:
        hf_config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(
            "model.pretrained", f"cannot load the config of {name!r}: {first_line(err)}"
        ) from None
    if not getattr(hf_config, "max_position_embeddings", None):
        raise ConfigError("model.pretrained", f"{name!r} has no max_position_embeddings in its config")
    strategy = None
    strategy_file = Path(source) / "dprope.json"
    if path is not None and strategy_file.is_file():
        try:
            strategy = json.loads(strategy_file.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError("model.pretrained", f"{strategy_file} is not valid JSON ({err.msg})") from None
    return Checkpoint(model.name, source, model.tokenizer or source, hf_config, strategy)


def resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def attention_implementation(device: str) -> str:
    """FlashAttention-2 where it can run (the package imports and the device is CUDA), else SDPA."""
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_eval_tokenizer(checkpoint: Checkpoint):
    field = "model.tokenizer" if checkpoint.tokenizer != checkpoint.source else "model.pretrained"
    return load_tokenizer(checkpoint.tokenizer, field=field)


def load_model(checkpoint: Checkpoint, device: str, rope_precision: str = "model"):
    """The causal LM in eval mode on ``device``: bf16 on CUDA, fp32 elsewhere; the rotary
    rotation in ``rope_precision`` (`dprope.rope.precision`)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint.source, dtype=dtype, attn_implementation=attention_implementation(device)
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            "model.pretrained", f"cannot load {checkpoint.source!r}: {first_line(err)}"
        ) from None
    from dprope.rope.precision import apply_rope_precision

    apply_rope_precision(model, rope_precision)
    return model.to(device).eval()
