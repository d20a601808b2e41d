"""Load the model under evaluation: a trainer export, any HF causal-LM directory, or a hub id.

Checks run cheapest first, so a bad ``model.pretrained`` fails in a second with one line: the
path must exist and hold a ``config.json`` and weights; the checkpoint's config (not the preset)
gives ``max_position_embeddings``, the limit every benchmark's lengths are checked against
before the weights are read. Weights load in bf16 on CUDA (fp32 on CPU) with FlashAttention-2
when ``flash_attn`` imports on a CUDA device, else PyTorch SDPA.

Training-free evaluation (the paper's Table 10, every "no fine-tuning" baseline): with a RoPE
strategy given (``rope=yarn rope.factor=4``), `resolve_checkpoint` writes into the base
checkpoint's config the same native ``rope_parameters`` and ``max_position_embeddings = s * L``
the trainer exports (`dprope.model.apply_rope`), and `load_model` builds the weights on that
config, so the evaluated model is exactly what an export of the untrained strategy would be.
`load_with_strategy` does both in one call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line, local_path
from dprope.data.tokenizer import load_tokenizer
from dprope.inputs import check_safetensors
from dprope.model import ModelConfig, apply_rope
from dprope.rope.registry import RopeConfig

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


@dataclass
class Checkpoint:
    """Where the model comes from and what its config says, before any weight is read."""

    name: str  # display name (model.name)
    source: str  # local directory or hub id
    tokenizer: str  # model.tokenizer, else source
    hf_config: Any  # the checkpoint's transformers config
    strategy: dict[str, Any] | None = None  # the trainer export's dprope.json (its RoPE strategy), if any
    applied_at_load: bool = False  # the strategy was applied to hf_config here (training-free), not trained

    @property
    def max_positions(self) -> int:
        return int(self.hf_config.max_position_embeddings)

    @property
    def original_length(self) -> int:
        """The pre-training context L: the scaling's original_max_position_embeddings (for PI,
        max_position_embeddings / factor), else max_position_embeddings (a base model)."""
        params = getattr(self.hf_config, "rope_parameters", None) or {}
        if params.get("original_max_position_embeddings"):
            return int(params["original_max_position_embeddings"])
        if params.get("rope_type") == "linear" and params.get("factor"):  # PI exports no original length
            return int(round(self.max_positions / float(params["factor"])))
        return self.max_positions


def resolve_checkpoint(model: ModelConfig, rope: RopeConfig | None = None) -> Checkpoint:
    """Validate ``model.pretrained`` and read the checkpoint's config (no weights); with ``rope``,
    apply that strategy to the config (see `apply_strategy`)."""
    from transformers import AutoConfig

    name = model.pretrained
    if not name:
        raise ConfigError("model.pretrained", "must be set to a model directory or hub id to evaluate")
    path = local_path(name)
    if path is not None:
        if path.is_file():
            raise ConfigError("model.pretrained", f"{name} is a file, not a model directory")
        if not path.is_dir():
            raise ConfigError("model.pretrained", f"no model directory at {name}")
        if not (path / "config.json").is_file():
            raise ConfigError("model.pretrained", f"no config.json in {name}")
        if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
            raise ConfigError("model.pretrained", f"no weights (*.safetensors or *.bin) in {name}")
        check_safetensors(path, "model.pretrained")  # a truncated weight file, from its header
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
    checkpoint = Checkpoint(model.name, source, model.tokenizer or source, hf_config, strategy)
    if rope is not None:
        apply_strategy(checkpoint, rope, model)
    return checkpoint


def apply_strategy(checkpoint: Checkpoint, rope: RopeConfig, model: ModelConfig) -> None:
    """Apply ``rope`` to a base checkpoint's config, as the trainer does before fine-tuning.

    The checkpoint's rotary geometry (family, head_dim, base, its own rope type and parameters,
    L = max_position_embeddings) must agree with the preset's (`dprope.model.apply_rope`); a
    checkpoint whose own RoPE is scaled (Llama-3.1's llama3) has the strategy composed with it,
    and one whose rope type does not compose (a trainer's longrope export) is refused. The
    checkpoint is renamed ``<name>-<strategy>-x<factor>`` and its ``strategy`` record names the
    strategy, factor, per-pair factors and exported rope_parameters.
    """
    from dprope.rope.summary import strategy_summary

    scaling = apply_rope(checkpoint.hf_config, rope, model, checkpoint.source)
    checkpoint.strategy = {**strategy_summary(rope, scaling), "applied": "at load time, no fine-tuning"}
    checkpoint.applied_at_load = True
    checkpoint.name = f"{checkpoint.name}-{rope.name}-x{rope.factor:g}"


def resolve_device(device: str | None) -> str:
    """``device``, else the process's accelerator (`dprope.accelerator`: cuda or cpu)."""
    from dprope.accelerator import device_type

    return device or device_type()


def attention_implementation(device: str) -> str:
    """FlashAttention-2 where it can run (`dprope.accelerator.flash_attn_problem`) and the device
    is CUDA, else SDPA (with the reason logged)."""
    from dprope.accelerator import flash_attn_problem

    if not device.startswith("cuda"):
        return "sdpa"
    problem = flash_attn_problem()
    if problem is None:
        return "flash_attention_2"
    log.info("attention: sdpa (flash-attn not used: %s)", problem)
    return "sdpa"


def load_eval_tokenizer(checkpoint: Checkpoint):
    field = "model.tokenizer" if checkpoint.tokenizer != checkpoint.source else "model.pretrained"
    return load_tokenizer(checkpoint.tokenizer, field=field)


def load_model(checkpoint: Checkpoint, device: str, rope_precision: str = "model"):
    """The causal LM in eval mode on ``device``: bf16 on CUDA, fp32 elsewhere; the rotary
    rotation in ``rope_precision`` (`dprope.rope.rotation`)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint.source,
            config=checkpoint.hf_config,  # carries the strategy when one was applied at load time
            dtype=dtype,
            attn_implementation=attention_implementation(device),
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            "model.pretrained", f"cannot load {checkpoint.source!r}: {first_line(err)}"
        ) from None
    from dprope.rope.rotation import apply_rope_precision

    apply_rope_precision(model, rope_precision)
    return model.to(device).eval()


def load_with_strategy(model: ModelConfig, rope: RopeConfig | None, device: str | None = None):
    """``(model, checkpoint)``: ``model.pretrained`` with ``rope`` applied at load time (or as
    saved when ``rope`` is None), in eval mode; the one call training-free evaluation needs."""
    checkpoint = resolve_checkpoint(model, rope)
    return load_model(checkpoint, resolve_device(device)), checkpoint
