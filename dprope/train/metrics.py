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

from dprope import accelerator

# Dense bf16 peak per device, in TFLOP/s, from NVIDIA's data sheets (which give the sparse
# figure, twice these). A device name matches the first key it contains, case ignored, so each
# form factor with its own peak comes before its family: "NVIDIA H100 PCIe" is not an SXM H100.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H800 PCIe", 756.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),  # SXM; GH200's GPU too
    ("H800", 989.0),
    ("A100", 312.0),  # SXM and PCIe alike
    ("A800", 312.0),
)


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


def table_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (`PEAK_TFLOPS`), None when it is not listed."""
    name = device_name.lower()
    return next((tflops for key, tflops in PEAK_TFLOPS if key.lower() in name), None)


def peak_flops(configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: configured, or looked up by the GPU name; None on CPU/unknown."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if not accelerator.on_cuda():
        return None
    tflops = table_peak_tflops(torch.cuda.get_device_name())
    return None if tflops is None else tflops * 1e12


CLEAR_REFS = Path("/proc/self/clear_refs")  # Linux: writing 5 resets the peak resident set size


def _resident_peak_gib(reset: bool) -> float:
    """The peak resident set size (``VmHWM``) since the process started or the last reset."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        peak = int(line.split()[1]) / 2**20  # kB
        if reset:
            try:
                CLEAR_REFS.write_text("5")
            except OSError:
                pass  # not resettable here: the figure stays the process's peak (README, Fine-tuning)
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no reset outside Linux
    return rss / 2**20 if sys.platform != "darwin" else rss / 2**30


def peak_memory_gib(reset: bool = False) -> float:
    """Peak memory since the process started or since the last ``reset=True`` call: device memory
    allocated on CUDA, else the resident set size. ``reset`` starts a new interval after reading,
    so a metric logged per step is that step's peak."""
    if accelerator.on_cuda():
        peak = torch.cuda.max_memory_allocated() / 2**30
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return peak
    return _resident_peak_gib(reset)


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
