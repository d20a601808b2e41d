"""Export the trained model as a plain Hugging Face directory (docs/method-notes.md, section 5).

``<output_dir>/hf`` holds safetensors weights, a config whose native ``rope_parameters`` carry
the strategy (no custom code, no trust_remote_code), the tokenizer, and ``dprope.json``
describing the strategy. It is written to a temporary directory and renamed into place, so an
interrupted export never replaces a complete one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist


def gathered_state_dict(engine) -> dict[str, Any] | None:
    """The full state dict on rank 0 (ZeRO-3 shards gathered; every rank must call this)."""
    if engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}


def export_hf(engine, tokenizer, output_dir: Path, rank: int, strategy: dict[str, Any]) -> Path:
    """Write ``output_dir/hf``; collective (every rank calls it), rank 0 writes."""
    state_dict = gathered_state_dict(engine)
    target = output_dir / "hf"
    if rank == 0:
        staging = output_dir / ".hf.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model = engine.module
        use_cache = model.config.use_cache
        model.config.use_cache = True  # training disables the KV cache for gradient checkpointing
        model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
        model.config.use_cache = use_cache
        tokenizer.save_pretrained(staging)
        (staging / "dprope.json").write_text(json.dumps(strategy, indent=2))
        if target.exists():
            old = output_dir / ".hf.old"
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    if dist.is_initialized():
        dist.barrier()
    return target
