"""Does RoPE stay relative? Attention with every position id shifted by a constant.

In exact arithmetic a RoPE attention logit depends on the distance of its query and key only,
so running the same input at positions ``0 .. T-1`` and at ``c .. c+T-1`` gives the same
logits. Wang et al. (2024, "When Precision Meets Position", section 3) show that under bf16 it
does not, that the deviation grows with position, and that the first token contributes most of
it. `measure` repeats their measurement on any Llama-family model for three settings:

- ``bf16 / model rotation``: bf16 weights, transformers' rotation (cos/sin cast to bf16);
- ``bf16 / fp32 rotation``: bf16 weights, q/k rotated in float32 then cast back
  (`dprope.rope.rotation`, ``trainer.rope_precision=fp32``);
- ``float32``: the whole model in float32 (the reference that only float32 rounding disturbs).

Reported per setting: the mean absolute logit difference (pre-softmax, causal pairs, all layers
and heads) by query-position bucket, the same for the attention probabilities, and the first
token's share of the probability difference (its column over all columns).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from dprope.config import ConfigError, typed_sections
from dprope.figures import pyplot, save_figure
from dprope.model import ModelConfig
from dprope.rope.rotation import apply_rope_precision

PROBE = "dprope_logit_probe"
SETTINGS = ("bf16 / model rotation", "bf16 / fp32 rotation", "float32")


@dataclass
class PrecisionConfig:
    """The schema of `configs/precision.yaml`'s ``precision`` key."""

    length: int = 512  # tokens of the input (query positions measured)
    shift: int = 4096  # constant added to every position id in the shifted run
    buckets: int = 8  # query-position buckets of the table
    seed: int = 0  # random token ids of the input
    device: str | None = None  # null = cuda when present, else cpu
    output_dir: str | None = None  # precision.json and the plot; null = the Hydra run directory
    figures: bool = True  # write precision.png

    def __post_init__(self) -> None:
        for name in ("length", "buckets"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")
        if self.shift <= 0:
            raise ConfigError("shift", f"must be positive (got {self.shift})")
        if self.buckets > self.length:
            raise ConfigError("buckets", f"must be at most length {self.length} (got {self.buckets})")


@dataclass
class PrecisionJob:
    """What `launch/precision.py` runs, typed: the root schema of `configs/precision.yaml` (its
    fields are the config's only top-level keys)."""

    model: ModelConfig  # the checkpoint (model.pretrained) or the preset's random init
    precision: PrecisionConfig

    @classmethod
    def from_config(cls, cfg: Any) -> PrecisionJob:
        return typed_sections(cls, cfg)


@dataclass
class PrecisionResult:
    length: int
    shift: int
    bucket_edges: list[int]  # query positions: bucket i is [edges[i], edges[i+1])
    logit_deviation: dict[str, list[float]] = field(default_factory=dict)  # setting -> per bucket
    probability_deviation: dict[str, list[float]] = field(default_factory=dict)
    mean_logit_deviation: dict[str, float] = field(default_factory=dict)
    first_token_share: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def _register_probe() -> None:
    """An attention function for transformers' registry: records each layer's pre-softmax
    logits, then runs transformers' eager attention on the same tensors."""
    from transformers import AttentionInterface
    from transformers.models.llama.modeling_llama import eager_attention_forward, repeat_kv

    def probe(module, query, key, value, attention_mask, scaling=None, **kwargs):
        keys = repeat_kv(key, module.num_key_value_groups)
        logits = torch.matmul(query, keys.transpose(2, 3)).float() * scaling  # (batch, heads, q, k)
        module.dprope_logits = logits.detach()
        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    AttentionInterface.register(PROBE, probe)


def _logits(model, ids: torch.Tensor, start: int) -> list[torch.Tensor]:
    positions = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
    with torch.no_grad():
        model(input_ids=ids, position_ids=positions)
    return [m.dprope_logits for m in model.modules() if hasattr(m, "dprope_logits")]


def _probabilities(logits: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~causal, torch.finfo(torch.float32).min).softmax(-1)


def measure(model: torch.nn.Module, settings: PrecisionConfig, vocab_size: int) -> PrecisionResult:
    """Run the shift measurement; ``model`` is a float32 Llama-family causal LM (not modified)."""
    _register_probe()
    from dprope.accelerator import device_type

    device = torch.device(settings.device or device_type())
    generator = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(3, vocab_size, (1, settings.length), generator=generator).to(device)
    edges = torch.linspace(0, settings.length, settings.buckets + 1).round().long()
    causal = torch.ones(settings.length, settings.length, dtype=torch.bool, device=device).tril()
    result = PrecisionResult(settings.length, settings.shift, edges.tolist(), device=str(device))
    for name in SETTINGS:
        variant = copy.deepcopy(model).to(device)
        variant.config._attn_implementation = PROBE
        inv_freqs = [m.inv_freq.clone() for m in variant.modules() if hasattr(m, "inv_freq")]
        if name != "float32":
            variant = variant.to(torch.bfloat16)
            rotaries = [m for m in variant.modules() if hasattr(m, "inv_freq")]
            for rotary, inv_freq in zip(rotaries, inv_freqs, strict=True):
                rotary.inv_freq = inv_freq  # float32 angles, as the trainer keeps them
            apply_rope_precision(variant, "fp32" if "fp32" in name else "model")
        base, shifted = _logits(variant, ids, 0), _logits(variant, ids, settings.shift)
        logit_diff = torch.stack(
            [(a - b).abs().mean(dim=(0, 1)) for a, b in zip(base, shifted, strict=True)]
        ).mean(0)
        prob_diff = torch.stack(
            [
                (_probabilities(a, causal) - _probabilities(b, causal)).abs().mean(dim=(0, 1))
                for a, b in zip(base, shifted, strict=True)
            ]
        ).mean(0)  # (q, k)
        logit_diff = logit_diff.masked_fill(~causal, 0)
        per_query_logit = logit_diff.sum(-1) / causal.sum(-1)
        per_query_prob = prob_diff.sum(-1) / causal.sum(-1)
        result.logit_deviation[name] = [
            per_query_logit[a:b].mean().item() for a, b in pairwise(edges.tolist())
        ]
        result.probability_deviation[name] = [
            per_query_prob[a:b].mean().item() for a, b in pairwise(edges.tolist())
        ]
        result.mean_logit_deviation[name] = (logit_diff.sum() / causal.sum()).item()
        result.first_token_share[name] = (prob_diff[:, 0].sum() / prob_diff.sum().clamp_min(1e-30)).item()
        del variant
    return result


def format_table(result: PrecisionResult) -> str:
    """Mean |logit(shifted) - logit| by query-position bucket, one row per setting."""
    heads = [f"{a}-{b - 1}" for a, b in pairwise(result.bucket_edges)]
    lines = [
        f"attention logits, positions shifted by {result.shift} vs unshifted ({result.length} tokens, "
        f"{result.device}): mean |difference| by query position",
        f"{'setting':<24}" + "".join(f"{h:>10}" for h in heads) + f"{'all':>10}{'1st tok':>9}",
    ]
    for name, row in result.logit_deviation.items():
        cells = "".join(f"{v:>10.2e}" for v in row)
        lines.append(
            f"{name:<24}{cells}{result.mean_logit_deviation[name]:>10.2e}"
            f"{result.first_token_share[name]:>9.1%}"
        )
    lines.append("1st tok: the first token's share of the attention-probability difference")
    return "\n".join(lines)


def write_json(result: PrecisionResult, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "precision.json"
    path.write_text(json.dumps(asdict(result), indent=2))
    return path


def write_figure(result: PrecisionResult, output_dir: Path) -> Path:
    plt = pyplot()

    centers = [(a + b - 1) / 2 for a, b in pairwise(result.bucket_edges)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in result.logit_deviation.items():
        ax.plot(centers, [max(v, 1e-12) for v in row], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("query position")
    ax.set_ylabel(f"mean |logit difference|, shift {result.shift}")
    ax.legend()
    return save_figure(fig, output_dir / "precision.png")


def summary(result: PrecisionResult) -> dict[str, Any]:
    return {name: result.mean_logit_deviation[name] for name in result.mean_logit_deviation}
