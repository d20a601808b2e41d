"""Throughput, MFU and where metrics go (console, `metrics.jsonl`, wandb).

FLOP convention (PaLM, appendix B; as in nanoGPT and torchtitan): a training token costs
``6 * N + 12 * layers * heads * head_dim * seq_len`` FLOPs, where N counts every parameter but
the input embedding table (a lookup, no matmul) and the second term is the attention
score and value products, forward and backward. MFU = achieved FLOP/s / (devices x peak FLOP/s).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

# Dense bf16 peak per device, in TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "A800": 312.0, "H800": 989.0}


def flops_per_token(num_params: int, num_layers: int, num_heads: int, head_dim: int, seq_len: int) -> float:
    """6N + 12 * L * H * d_head * T (forward and backward of one token)."""
    return 6.0 * num_params + 12.0 * num_layers * num_heads * head_dim * seq_len


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """N of the convention: every parameter but the input embedding (full sizes under ZeRO-3)."""
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if id(p) not in skip)


def model_flops_per_token(model: torch.nn.Module, head_dim: int, seq_len: int) -> float:
    """`flops_per_token` of a (possibly ZeRO-3 partitioned) HF model at ``seq_len`` tokens."""
    config = model.config
    return flops_per_token(
        non_embedding_parameters(model),
        config.num_hidden_layers,
        config.num_attention_heads,
        head_dim,
        seq_len,
    )


def peak_flops(configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: configured, or looked up by the GPU name; None on CPU/unknown."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def peak_memory_gib() -> float:
    """Peak device memory on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform != "darwin" else rss / 2**30


class MetricsLog:
    """Appends one JSON object per step to ``metrics.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        self._handle = open(path, "a")

    def _truncate_after(self, step: int) -> None:
        """Drop lines of steps a resumed run will redo (logged after the checkpoint it resumes)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
