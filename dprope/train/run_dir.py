"""One run per output directory: a lock held for the run's life, and starting over without mixing.

**The lock.** Rank 0 holds an exclusive `fcntl.flock` on ``<output_dir>/.dprope.lock`` from
before the run reads its checkpoints until it exits. The file holds the holder's PID, host and
start time; a second run on the same directory fails at once, in one line naming the directory
and the holder. The kernel drops the lock when its process ends, however it ends (a crash,
SIGKILL, a node failure on a network file system that supports `flock`), so a lock is never left
held by a dead run; a holder's record still in the file when the lock is taken again is a run
that ended without releasing it, which is logged (``stale lock``). A clean exit empties the file.

**Starting over.** ``trainer.resume=never`` in a directory that holds an earlier run (its
checkpoints, metrics, config or export), or a resume from another run's checkpoint into such a
directory, first moves that run's files aside into the sibling
``<output_dir>.before-<YYYYmmdd-HHMMSS>`` (a rename on the same file system: nothing is copied or
deleted), so the new run's checkpoints, `latest`, metrics and export are never mixed with the
old ones. Only the files a run writes are moved (`RUN_FILES`); anything else stays.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

import torch.distributed as dist

from dprope.config import ConfigError
from dprope.train import checkpoint

log = logging.getLogger(__name__)

LOCK = ".dprope.lock"
# what a training run writes into its output directory
RUN_FILES = (
    "checkpoints",
    "metrics.jsonl",
    "config.yaml",
    "rope.json",
    "deepspeed_config.json",
    "hf",
    ".hf.tmp",
    ".hf.old",
    "wandb",
    "wandb_id.txt",
)


class RunLock:
    """The exclusive lock of one run directory (`acquire`, `release`)."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK
        self.fd: int | None = None
        self.stale: dict | None = None  # the record of a holder that ended without releasing

    def acquire(self) -> dict | None:
        """Take the lock; the holder's record when another process holds it (then not taken)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _record(fd) or {"pid": "?", "host": "?"}
            os.close(fd)
            return holder
        self.fd, self.stale = fd, _record(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # a clean exit leaves no holder record
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _record(fd: int) -> dict | None:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"pid": "?", "host": "?", "note": text[:80]}


def describe(holder: dict) -> str:
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


def lock_run_dir(output_dir: Path, rank: int) -> RunLock | None:
    """Rank 0 takes the run directory's lock, and every rank learns whether it did: a busy
    directory is a `ConfigError` on ``trainer.output_dir`` on every rank. Call after joining the
    process group, before reading or writing anything in ``output_dir``."""
    lock, holder = None, None
    if rank == 0:
        lock = RunLock(output_dir)
        holder = lock.acquire()
        if holder is None and lock.stale is not None:
            log.warning(
                "stale lock in %s: the run of %s ended without releasing it (killed or crashed); "
                "taking it over",
                output_dir,
                describe(lock.stale),
            )
    holder = _from_rank0(holder)
    if holder is not None:
        raise ConfigError(
            "trainer.output_dir",
            f"{output_dir} is in use by another run ({describe(holder)}): wait for it to end, or "
            "choose another trainer.output_dir",
        )
    return lock


def _from_rank0(value):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def new_run_id() -> str:
    """A fresh run's identity, recorded in its checkpoints (the same on every rank)."""
    return _from_rank0(uuid.uuid4().hex[:12])


def keep_runs_apart(resume: str, output_dir: Path, candidates: list[Path], rank: int) -> None:
    """Rank 0 moves an earlier run aside when this one starts over (``resume`` is ``never``) or
    continues another run's checkpoint (a path whose run id no checkpoint of ``output_dir``
    has); every rank waits for it. ``candidates``: `dprope.train.checkpoint.resume_candidates`."""
    if rank == 0 and resume != "auto" and holds_run(output_dir):
        if resume == "never":
            move_aside(output_dir, "trainer.resume=never")
        else:
            resumed = checkpoint.read_state(candidates[0]).run_id
            ours = checkpoint.complete_checkpoints(checkpoint.checkpoint_root(output_dir))
            if not any(checkpoint.read_state(path).run_id == resumed for path in ours):
                move_aside(output_dir, f"trainer.resume={resume} (a checkpoint of another run)")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def holds_run(output_dir: Path) -> bool:
    return any((output_dir / name).exists() for name in RUN_FILES)


def move_aside(output_dir: Path, why: str) -> Path:
    """Move the run files of ``output_dir`` into a new sibling directory (rank 0); returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = output_dir.with_name(f"{output_dir.name}.before-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = output_dir.with_name(f"{output_dir.name}.before-{stamp}-{suffix}")
    target.mkdir()
    for name in RUN_FILES:
        if (output_dir / name).exists() or (output_dir / name).is_symlink():
            os.rename(output_dir / name, target / name)
    log.warning("%s: moved the earlier run in %s aside to %s", why, output_dir, target)
    return target
