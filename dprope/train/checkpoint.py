"""Checkpoints that survive a kill at any moment, a damaged file and a change of world size.

Layout under ``<output_dir>/checkpoints``::

    step_00000100/            DeepSpeed state (model, optimizer, scheduler) of every rank
        trainer_state.json    step, consumed samples, world size, the run's id
        settings.json         the settings of the run that wrote it (dprope.train.resume_settings)
        rng_rank<r>.pt        python, numpy and torch RNG states of rank r (tensors and numbers)
        manifest.json         every file above with its size and CRC-32
        COMPLETE              written last, after every rank has finished
        universal/            DeepSpeed universal checkpoint, converted from the files above on
                              the first resume on another world size, then reused
    latest                    name of the newest complete checkpoint, replaced atomically

A save writes a new directory, waits for every rank, writes the manifest, marks the directory
complete and only then moves ``latest`` (a temporary file, then `os.replace`) and deletes
checkpoints of the same run (its id in ``trainer_state.json``) beyond the last K, never the one
``latest`` names. A kill during a save leaves ``latest`` on the previous, complete checkpoint; a
directory without ``COMPLETE`` is never loaded and is removed by the next save. A write that
fails (a full disk) ends the save on every rank with one error naming the file: the partial
directory is removed and ``latest`` stays on the previous checkpoint (`SaveError`). DeepSpeed
writes through this engine's own checkpoint engine (`GuardedCheckpointEngine`), which saves
through a Python file (so a full disk keeps its errno and file name) and loads weights only.

A resume verifies the checkpoint against its manifest (`verify`: each rank checks a share of the
files). A damaged one (a truncated file after a full disk, a half-synced copy) is skipped with a
warning naming the file, and the newest intact one is loaded instead (`choose_resume`). Nothing
read from a checkpoint can run code (`dprope.train.safe_load`): a pickle naming anything outside
the allow-list is refused before the model loads, and every load is weights-only.

Why CRC-32 (`zlib.crc32`, streamed in 16 MiB blocks): the manifest guards against truncation
and accidental damage, not against an adversary, and CRC-32 detects those while running several
times faster than a cryptographic hash (3.9 GB/s, against 0.6 for BLAKE2b and 0.8 for SHA-256,
on one core of a development machine), so checking never costs more than reading the files.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dprope.config import ConfigError, first_line
from dprope.storage import NoSpaceError, newest_file, no_space
from dprope.train.resume_settings import SETTINGS
from dprope.train.safe_load import safe_load, safe_loading, unsafe_globals

log = logging.getLogger(__name__)

LATEST = "latest"
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
UNIVERSAL = "universal"
TAG_PATTERN = re.compile(r"^step_(\d{8})$")
# files a rank writes carry its rank: DeepSpeed's zero_pp_rank_<r>_..., our rng_rank<r>.pt
RANK_IN_NAME = re.compile(r"(?:zero_pp_rank_|rng_rank)(\d+)")
BLOCK = 16 << 20


class CheckpointLoadError(Exception):
    """DeepSpeed could not load a checkpoint that passed verification: not a configuration error
    (`dprope.train.config.EXIT_LOAD_FAILED`)."""


class SaveError(Exception):
    """A checkpoint could not be written (a full disk, mostly); the previous one stays in charge
    (`dprope.train.config.EXIT_SAVE_FAILED`). The message is one line naming the file."""


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    consumed_samples: int = 0  # global training sequences consumed (= sum of the steps' global batches)
    world_size: int = 1  # world size at save time (the data order does not depend on it)
    run_id: str = ""  # the run that wrote it, kept across resumes ("" before run ids existed)


@dataclass
class Resume:
    """The verified checkpoint a run continues from."""

    path: Path
    state: TrainerState
    universal: bool  # saved on another world size: load the universal conversion

    @property
    def load_dir(self) -> tuple[Path, str]:
        """(directory, tag) to give DeepSpeed's `load_checkpoint`."""
        return (self.path, UNIVERSAL) if self.universal else (self.path.parent, self.path.name)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and (path / STATE_FILE).is_file()


def read_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / STATE_FILE).read_text()))


def describe(path: Path | None) -> str:
    """How an error names the checkpoint left in charge."""
    return f"checkpoint {path.name} is kept" if path is not None else "no earlier checkpoint exists"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, newest first, the one ``latest`` names leading."""
    complete = sorted(
        (p for p in root.glob("step_*") if TAG_PATTERN.match(p.name) and is_complete(p)), reverse=True
    )
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if named in complete:
            complete.remove(named)
            complete.insert(0, named)
    return complete


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest`` names, if it is complete; else the newest complete one."""
    complete = complete_checkpoints(root)
    return complete[0] if complete else None


def resume_candidates(resume: str, output_dir: str | Path) -> list[Path]:
    """Checkpoints to try, in order: ``auto`` (every complete one in output_dir, newest first),
    ``never`` (none), or a path (that one only, which must be complete)."""
    if resume == "never":
        return []
    if resume == "auto":
        return complete_checkpoints(checkpoint_root(output_dir))
    path = Path(resume)
    if not is_complete(path):
        raise ConfigError("trainer.resume", f"{resume} is not a complete checkpoint directory")
    return [path]


# --- manifest -------------------------------------------------------------------------------


def crc32(path: Path) -> str:
    value = 0
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            value = zlib.crc32(block, value)
    return f"{value:08x}"


def _listed_files(path: Path) -> list[str]:
    """Files of a checkpoint directory the manifest covers (relative, sorted): everything but the
    manifest, the completion mark and the universal conversion."""
    names = []
    for file in path.rglob("*"):
        relative = file.relative_to(path).as_posix()
        if file.is_file() and relative not in (MANIFEST, COMPLETE) and not relative.startswith(UNIVERSAL):
            names.append(relative)
    return sorted(names)


def _owner(name: str, index: int, world_size: int, by_name: bool) -> int:
    """The rank that hashes (or checks) a file: at save, the rank that wrote it, whose page cache
    still holds it; on a resume (another world size, perhaps) the files are shared round-robin."""
    match = RANK_IN_NAME.search(name) if by_name else None
    return (int(match.group(1)) if match else index) % world_size


def _gather(items: list) -> list:
    """Every rank's list, concatenated in rank order (the list itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, items)
    return [item for part in everyone for item in part]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def write_manifest(path: Path, alone: bool = False) -> None:
    """Size and CRC-32 of every file in ``path``; each rank hashes the files it wrote, rank 0
    writes the manifest. Call on every rank, after every rank's files are written (or in one
    process ``alone``, for a directory it wrote by itself)."""
    rank, world_size = (0, 1) if alone else _world()
    names = _listed_files(path)
    mine = [
        (name, {"size": (path / name).stat().st_size, "crc32": crc32(path / name)})
        for index, name in enumerate(names)
        if _owner(name, index, world_size, by_name=True) == rank
    ]
    files = dict(mine if alone else _gather(mine))
    if rank == 0:
        manifest = {"checksum": "crc32", "files": dict(sorted(files.items()))}
        _write_atomic(path / MANIFEST, json.dumps(manifest, indent=1))


def verify(path: Path, alone: bool = False) -> list[str]:
    """What is wrong with a checkpoint directory against its manifest (empty: intact), agreed by
    every rank (or checked by this process ``alone``). A directory without a manifest (written
    before manifests existed) is accepted."""
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        log.warning("%s has no %s: loading it unverified", path, MANIFEST)
        return []
    try:
        files = json.loads(manifest_file.read_text())["files"]
    except (ValueError, KeyError) as err:
        return [f"{manifest_file}: unreadable ({err})"]
    rank, world_size = (0, 1) if alone else _world()
    problems = []
    for index, (name, expected) in enumerate(sorted(files.items())):
        if _owner(name, index, world_size, by_name=False) != rank:
            continue
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif (size := file.stat().st_size) != expected["size"]:
            problems.append(f"{file}: {size} bytes, the manifest says {expected['size']}")
        elif crc32(file) != expected["crc32"]:
            problems.append(f"{file}: checksum differs from the manifest")
    return problems if alone else _gather(problems)


def choose_resume(
    candidates: list[Path],
    world_size: int,
    rank: int,
    accept: Callable[[Path, TrainerState], None] | None = None,
) -> Resume | None:
    """The first intact checkpoint of ``candidates``; a damaged one is skipped with a warning
    naming its bad file, one holding anything but plain weights is refused (`refuse_unsafe`).
    ``accept(path, state)`` may refuse the chosen one by raising (a resume's settings check),
    before it is converted to a universal checkpoint (once) when it was saved on another world
    size. Call on every rank, after joining the process group."""
    damage = []
    for path in candidates:
        problems = verify(path)
        if problems:
            damage.append(f"{path.name}: {problems[0]}")
            if rank == 0:
                log.warning("checkpoint %s is damaged (%s); trying the previous one", path, problems[0])
            continue
        refuse_unsafe(path)
        state = read_state(path)
        if accept is not None:
            accept(path, state)
        universal = state.world_size != world_size
        if universal:
            ensure_universal(path, state.world_size, world_size, rank)
        return Resume(path, state, universal)
    if damage:
        raise ConfigError("trainer.resume", f"no intact checkpoint to resume from ({'; '.join(damage)})")
    return None


def refuse_unsafe(path: Path) -> None:
    """A `ConfigError` when a pickle of the checkpoint names a global outside the allow-list
    (`dprope.train.safe_load`): such a file could run code when loaded, and is never loaded."""
    unsafe = unsafe_globals(path)
    if unsafe:
        raise ConfigError(
            "trainer.resume",
            f"refusing checkpoint {path}: {unsafe[0]} is not plain weights (a pickle that could run "
            "code); nothing from it was loaded. Resume only from checkpoints you wrote or trust",
        )


# --- universal conversion -------------------------------------------------------------------


def ensure_universal(path: Path, saved_world: int, world_size: int, rank: int) -> Path:
    """``path/universal``: DeepSpeed's universal checkpoint of ``path`` (`ds_to_universal`), which
    any world size loads. Rank 0 converts once and keeps the result (with its own manifest); a
    damaged or half-written conversion is redone. The others wait."""
    target = path / UNIVERSAL
    if rank == 0:
        if target.is_dir() and (target / COMPLETE).is_file() and not verify(target, alone=True):
            log.info("checkpoint %s: reusing its universal conversion", path.name)
        else:
            log.info(
                "checkpoint %s was saved by %d rank(s), this run has %d: converting it to a universal "
                "checkpoint in %s (once)",
                path.name,
                saved_world,
                world_size,
                target,
            )
            _convert(path, target)
    _barrier()
    return target


def _convert(path: Path, target: Path) -> None:
    import argparse
    import contextlib
    import io

    from deepspeed.checkpoint import ds_to_universal

    partial = path / f".{UNIVERSAL}.partial-{os.getpid()}"
    for stale in [target, *path.glob(f".{UNIVERSAL}.partial-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    args = argparse.Namespace(
        input_folder=str(path),
        output_folder=str(partial),
        num_extract_workers=1,  # in this process: no forked pool inside a training process
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=False,
    )
    chatter = io.StringIO()  # the converter prints its progress; keep it for a failure
    try:
        with contextlib.redirect_stdout(chatter), safe_loading():
            ds_to_universal.main(args)
    except Exception:
        log.error("universal conversion of %s failed; its output:\n%s", path, chatter.getvalue()[-3000:])
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (path / "latest_universal").unlink(missing_ok=True)  # the converter's pointer: we name tags
    os.rename(partial, target)
    write_manifest(target, alone=True)
    _write_atomic(target / COMPLETE, "")


# --- save and load --------------------------------------------------------------------------


RNG_FORMAT = 2  # 1 (no "format" key): numpy's state as a numpy array, which needs numpy allow-listed


def _rng_state() -> dict:
    """This process's RNG states as tensors, numbers and tuples only (weights-only loadable)."""
    algorithm, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "format": RNG_FORMAT,
        "python": random.getstate(),  # (version, 625 ints, None)
        "numpy": (algorithm, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if state.get("format", 1) >= 2:
        algorithm, keys, pos, has_gauss, gauss = numpy_state
        numpy_state = (algorithm, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    np.random.set_state(numpy_state)
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


class GuardedCheckpointEngine:
    """DeepSpeed's torch checkpoint engine for one engine instance (`guard`): DeepSpeed's files
    are saved through a Python file object, so a full disk surfaces as an OSError naming its file,
    and loaded weights only (`dprope.train.safe_load`). After a failed write the save's remaining
    writes are skipped but DeepSpeed's own barriers still run on every rank; `take_failure`
    hands the failure to `save`, which reports it once every rank is done."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.failure: tuple[Path, BaseException] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def save(self, state_dict: Any, path: str) -> None:
        if self.failure is not None:
            return
        try:
            with open(path, "wb") as handle:
                torch.save(
                    state_dict, handle, _use_new_zipfile_serialization=self.inner.zipfile_serialization
                )
        except Exception as err:  # reported by `save` after DeepSpeed's collectives
            self.failure = (Path(path), err)

    def load(self, path: str, map_location: Any = None) -> Any:
        return safe_load(path, map_location=map_location)

    def take_failure(self) -> tuple[Path, BaseException] | None:
        failure, self.failure = self.failure, None
        return failure


def guard(engine) -> GuardedCheckpointEngine | None:
    """Give ``engine`` a `GuardedCheckpointEngine` around its torch checkpoint engine (once)."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    current = getattr(engine, "checkpoint_engine", None)
    if isinstance(current, GuardedCheckpointEngine):
        return current
    if type(current) is not TorchCheckpointEngine:
        log.warning("DeepSpeed uses %s: checkpoint writes and loads are not guarded", type(current).__name__)
        return None
    engine.checkpoint_engine = GuardedCheckpointEngine(current)
    return engine.checkpoint_engine


def _attempt(write: Callable[[], Any], path: Path) -> tuple[Path, BaseException] | None:
    try:
        write()
    except Exception as err:
        return path, err
    return None


def _agree(failure: tuple[Path, BaseException] | None, partial: Path, rank: int, kept: str) -> None:
    """Every rank learns whether any rank failed to write; if one did, rank 0 removes the partial
    directory and every rank raises the same one-line error (a `NoSpaceError` for a full disk)."""
    mine = []
    if failure is not None:
        path, err = failure
        mine = [(str(path), no_space(err), first_line(err, with_type=True))]
        if not no_space(err):
            log.error("writing %s failed", path, exc_info=err)
    failures = _gather(mine)
    if not failures:
        return
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
    _barrier()
    path, full, what = failures[0]
    if full:
        raise NoSpaceError(path, kept)
    raise SaveError(f"writing {path} failed ({what}); {kept}")


def save(
    engine,
    output_dir: str | Path,
    state: TrainerState,
    rank: int,
    keep_last: int,
    before_manifest: Callable[[Path, TrainerState], None] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Save every rank's state under a new tag, write the manifest, then mark the checkpoint
    complete and move ``latest``. ``before_manifest(path, state)`` runs on every rank once its
    files are written, before the manifest and the completion mark (a test kills the process
    there). ``settings``: the run's (`dprope.train.resume_settings.run_settings`), recorded for
    resumes to compare. A failed write (a full disk) removes the partial directory and raises a
    `NoSpaceError` or `SaveError` naming the file on every rank; ``latest`` is not moved."""
    root = checkpoint_root(output_dir)
    tag = tag_for(state.step)
    path = root / tag
    kept = describe(latest_checkpoint(root)) if root.is_dir() else describe(None)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a half-written save of the same step from a killed run
            shutil.rmtree(path)
    _barrier()
    guarded = guard(engine)
    failure = None
    try:
        engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    except Exception as err:  # a write outside the checkpoint engine (DeepSpeed's recovery script)
        failure = (newest_file(path), err)
    failure = (guarded.take_failure() if guarded is not None else None) or failure
    rng_file = path / f"rng_rank{rank}.pt"
    failure = failure or _attempt(lambda: _save_rng(rng_file), rng_file)
    if rank == 0 and failure is None:
        failure = _attempt(
            lambda: _write_atomic(path / STATE_FILE, json.dumps(asdict(state), indent=2)), path / STATE_FILE
        )
        if failure is None and settings is not None:
            failure = _attempt(
                lambda: _write_atomic(path / SETTINGS, json.dumps(settings, indent=1)), path / SETTINGS
            )
    if before_manifest is not None and failure is None:
        before_manifest(path, state)
    _agree(failure, path, rank, kept)
    failure = _attempt(lambda: write_manifest(path), path / MANIFEST)
    if rank == 0 and failure is None:
        failure = _attempt(lambda: _write_atomic(path / COMPLETE, ""), path / COMPLETE)
        if failure is None:
            failure = _attempt(lambda: _write_atomic(root / LATEST, tag), root / LATEST)
    _agree(failure, path, rank, kept)
    if rank == 0:
        prune(root, keep_last, state.run_id)
    _barrier()
    return path


def _save_rng(path: Path) -> None:
    with open(path, "wb") as handle:
        torch.save(_rng_state(), handle)


def prune(root: Path, keep_last: int, run_id: str | None = None) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints of run ``run_id`` (every
    complete one when None), never the one ``latest`` names, and incomplete leftovers older than
    the newest complete one. Checkpoints of another run are left alone."""
    tags = sorted(p for p in root.glob("step_*") if TAG_PATTERN.match(p.name))
    complete = [p for p in tags if is_complete(p)]
    if run_id is not None:
        complete = [p for p in complete if _run_of(p) == run_id]
    keep = set(complete[-keep_last:])
    pointer = root / LATEST
    if pointer.is_file():
        keep.add(root / pointer.read_text().strip())
    newest = complete[-1] if complete else None
    for path in tags:
        if path in keep:
            continue
        if path in complete or (not is_complete(path) and newest is not None and path.name < newest.name):
            shutil.rmtree(path, ignore_errors=True)


def _run_of(path: Path) -> str | None:
    try:
        return read_state(path).run_id
    except (OSError, ValueError, TypeError):
        return None


def check_shapes(engine, resume: Resume) -> None:
    """A `ConfigError` naming the first parameter whose shape in the checkpoint differs from the
    model's (a model of another size), instead of DeepSpeed's size-mismatch traceback. Read from
    DeepSpeed's ``param_shapes`` record (weights only); a checkpoint without one is not checked."""
    files = sorted(resume.path.glob("*model_states.pt"))
    if not files:
        return
    record = safe_load(files[0]).get("param_shapes")
    if not record:
        return
    saved = {name: list(shape) for group in record for name, shape in group.items()}
    model = {name: list(getattr(p, "ds_shape", p.shape)) for name, p in engine.module.named_parameters()}
    start_over = "resume with the checkpoint's model, or start over (trainer.resume=never, or a new trainer.output_dir)"
    for name, shape in model.items():
        if name not in saved:
            raise ConfigError(
                "model",
                f"the checkpoint {resume.path} holds no parameter {name}: another model; {start_over}",
            )
        if saved[name] != shape:
            raise ConfigError(
                "model",
                f"the checkpoint {resume.path} holds a model of another size: {name} is {saved[name]} there, "
                f"{shape} in this run's model; {start_over}",
            )


def load(engine, resume: Resume | Path) -> TrainerState:
    """Restore the engine and the trainer state from a checkpoint (a `Resume` from
    `choose_resume`, or a checkpoint directory saved on this world size), weights only
    (`dprope.train.safe_load`). The RNG streams are restored separately (`restore_rng`), as the
    very last thing before training goes on."""
    if isinstance(resume, Path):
        resume = Resume(resume, read_state(resume), universal=False)
    check_shapes(engine, resume)
    guard(engine)
    load_dir, tag = resume.load_dir
    try:
        with safe_loading():
            load_path, _ = engine.load_checkpoint(str(load_dir), tag=tag)
    except Exception as err:  # DeepSpeed raises several kinds: a model of another shape, a bad file
        log.error("DeepSpeed could not load %s", resume.path, exc_info=True)
        raise CheckpointLoadError(
            f"DeepSpeed could not load {resume.path}: {first_line(err, with_type=True)}"
        ) from err
    if load_path is None:
        raise CheckpointLoadError(
            f"DeepSpeed could not load {resume.path}: it found no checkpoint files there"
        )
    return read_state(resume.path)


def restore_rng(path: Path, rank: int) -> None:
    """This rank's python, numpy and torch RNG states as saved (weights only). Call it after
    everything else the set-up does: creating a DataLoader iterator, for one, draws from the
    torch RNG, which the uninterrupted run did at its start, not after the checkpoint."""
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: fresh streams there
        _set_rng_state(safe_load(rng_file))
