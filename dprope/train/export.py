"""Export the trained model as a plain Hugging Face directory (docs/method-notes.md, section 5).

``<output_dir>/hf`` holds safetensors weights, a config whose native ``rope_parameters`` carry
the strategy (no custom code, no trust_remote_code), the tokenizer, and ``dprope.json``
describing the strategy. It is written to a temporary directory and renamed into place, so an
interrupted export never replaces a complete one. A write that fails (a full disk) removes the
temporary directory, leaves an earlier ``hf/`` as it was and ends the run with one line naming
the file (`dprope.storage.NoSpaceError`, or `dprope.train.checkpoint.SaveError`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from dprope.config import first_line
from dprope.storage import NoSpaceError, newest_file, no_space
from dprope.train.checkpoint import SaveError, checkpoint_root, describe, latest_checkpoint

log = logging.getLogger(__name__)


def gathered_state_dict(engine) -> dict[str, Any] | None:
    """The full state dict on rank 0 (ZeRO-3 shards gathered; every rank must call this)."""
    if engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}


def _write(engine, state_dict, tokenizer, target: Path, staging: Path, strategy: dict[str, Any]) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    model = engine.module
    use_cache = model.config.use_cache
    model.config.use_cache = True  # training disables the KV cache for gradient checkpointing
    try:
        model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
    finally:
        model.config.use_cache = use_cache
    tokenizer.save_pretrained(staging)
    (staging / "dprope.json").write_text(json.dumps(strategy, indent=2))
    if target.exists():
        old = target.parent / ".hf.old"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def export_hf(engine, tokenizer, output_dir: Path, rank: int, strategy: dict[str, Any]) -> Path:
    """Write ``output_dir/hf``; collective (every rank calls it), rank 0 writes."""
    state_dict = gathered_state_dict(engine)
    target = output_dir / "hf"
    staging = output_dir / ".hf.tmp"
    failure = []
    if rank == 0:
        try:
            _write(engine, state_dict, tokenizer, target, staging, strategy)
        except Exception as err:
            # safetensors' writer names no file and removes the one it was filling: a weights file
            weights = "Safetensor" in type(err).__name__
            file = staging / "model*.safetensors" if weights else newest_file(staging)
            shutil.rmtree(staging, ignore_errors=True)
            failure = [(str(file), no_space(err), first_line(err, with_type=True))]
            if not no_space(err):
                log.error("the export failed writing %s", file, exc_info=err)
    if dist.is_initialized() and dist.get_world_size() > 1:
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, failure)
        failure = [item for part in everyone for item in part]
    if failure:
        file, full, what = failure[0]
        earlier = (
            f"the earlier export in {target} is unchanged" if target.exists() else "no export was written"
        )
        kept = (
            f"{earlier}; {describe(latest_checkpoint(checkpoint_root(output_dir)))}: run the same "
            "command again (trainer.resume=auto) once there is room, and it exports"
        )
        if full:
            raise NoSpaceError(file, kept)
        raise SaveError(f"writing {file} failed ({what}); {kept}")
    return target
