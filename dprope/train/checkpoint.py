"""Checkpoints that survive a kill at any moment.

Layout under ``<output_dir>/checkpoints``::

    step_00000100/            DeepSpeed state (model, optimizer, scheduler) of every rank
        trainer_state.json    step, consumed samples, world size
        rng_rank<r>.pt        python, numpy and torch RNG states of rank r
        COMPLETE              written last, after every rank has finished
    latest                    name of the newest complete checkpoint, replaced atomically

A save writes a new directory, waits for every rank, marks it complete and only then moves
``latest`` (write a temporary file, then `os.replace`) and deletes checkpoints beyond the last K.
A kill during a save therefore leaves ``latest`` on the previous, complete checkpoint; a directory
without ``COMPLETE`` is never loaded and is removed by the next save.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dprope.config import ConfigError

LATEST = "latest"
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
TAG_PATTERN = re.compile(r"^step_(\d{8})$")


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    consumed_samples: int = 0  # global training sequences consumed (= step x global batch)
    world_size: int = 1  # world size at save time (the data order does not depend on it)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and (path / STATE_FILE).is_file()


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest`` names, if it is complete; else the newest complete one."""
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if is_complete(candidate):
            return candidate
    complete = sorted(p for p in root.glob("step_*") if TAG_PATTERN.match(p.name) and is_complete(p))
    return complete[-1] if complete else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``auto`` (latest in output_dir, or none), ``never``, or a path."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(checkpoint_root(output_dir))
    path = Path(resume)
    if not is_complete(path):
        raise ConfigError("trainer.resume", f"{resume} is not a complete checkpoint directory")
    return path


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save(engine, output_dir: str | Path, state: TrainerState, rank: int, keep_last: int) -> Path:
    """Save every rank's state under a new tag, then mark it complete and move ``latest``."""
    root = checkpoint_root(output_dir)
    tag = tag_for(state.step)
    path = root / tag
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a half-written save of the same step from a killed run
            shutil.rmtree(path)
    _barrier()
    engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    torch.save(_rng_state(), path / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        _write_atomic(path / STATE_FILE, json.dumps(asdict(state), indent=2))
        _write_atomic(path / COMPLETE, "")
        _write_atomic(root / LATEST, tag)
        prune(root, keep_last)
    _barrier()
    return path


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and incomplete leftovers
    older than the newest complete one."""
    tags = sorted(p for p in root.glob("step_*") if TAG_PATTERN.match(p.name))
    complete = [p for p in tags if is_complete(p)]
    keep = set(complete[-keep_last:])
    newest = complete[-1] if complete else None
    for path in tags:
        if path in keep:
            continue
        if is_complete(path) or (newest is not None and path.name < newest.name):
            shutil.rmtree(path, ignore_errors=True)


def load(engine, path: Path, rank: int) -> TrainerState:
    """Restore the engine, this rank's RNG streams and the trainer state from a checkpoint."""
    load_path, _ = engine.load_checkpoint(str(path.parent), tag=path.name)
    if load_path is None:
        raise ConfigError("trainer.resume", f"DeepSpeed could not load {path}")
    state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: fresh streams there
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return state
