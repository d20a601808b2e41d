"""Reading a checkpoint never runs code from it.

A ``.pt`` file is a pickle, and unpickling can call any function the file names (``os.system``
among them). Everything training reads from a checkpoint is therefore loaded with
``torch.load(..., weights_only=True)``: tensors, numbers, strings and containers, plus the few
classes a checkpoint legitimately holds, allow-listed by name in `SAFE_GLOBALS`:

- DeepSpeed's own state: ``ZeroStageEnum`` and its loss scalers (``LossScaler``,
  ``DynamicLossScaler``) in the optimizer files, ``fragment_address`` in ZeRO-1/2's;
- numpy's array reconstruction, for the RNG files of earlier versions (numpy's state is now
  stored as a tensor, `dprope.train.checkpoint`).

DeepSpeed's loaders call ``torch.load(..., weights_only=False)`` themselves (its checkpoint
engine, the universal conversion and the universal load). `safe_loading` runs them with torch's
own switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` set, which turns each of those calls into a
weights-only load, and the allow-list in force; the environment is restored afterwards.

Before any of it, `unsafe_globals` lists, for every pickle of a checkpoint directory, the
globals outside the allow-list without unpickling anything (torch reads the pickle's opcodes):
a resume refuses such a checkpoint in one line naming the file, before the model loads.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_OFF = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # the opposite switch: both set is torch's error


class UnsafeCheckpointError(Exception):
    """A checkpoint file names a global outside the allow-list: it is not loaded."""


def safe_globals() -> list[Any]:
    """The classes and functions a checkpoint may name (besides torch's own safe set)."""
    import numpy as np
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    deepspeed_state = [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]
    numpy_arrays = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    return [*deepspeed_state, *numpy_arrays]


def allowed() -> torch.serialization.safe_globals:
    """`safe_globals` allowed for the block: only those not allowed already, so that blocks nest
    (torch's context removes what it added on exit, an outer block's entries included) and a
    process's own allow-list is left as it was."""
    present = torch.serialization.get_safe_globals()
    return torch.serialization.safe_globals([g for g in safe_globals() if g not in present])


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """Every `torch.load` in the block is weights-only, whatever its call site asks for, with
    `safe_globals` allowed (DeepSpeed's checkpoint loading and universal conversion run in it)."""
    saved = {name: os.environ.get(name) for name in (FORCE, FORCE_OFF)}
    os.environ[FORCE] = "1"
    os.environ.pop(FORCE_OFF, None)
    try:
        with allowed():
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load` of one file, weights only; a file that names anything else is an
    `UnsafeCheckpointError` naming the file and the global."""
    try:
        with allowed():
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f"{path}: {refused_global(err)}; not loaded") from None


def refused_global(err: BaseException) -> str:
    """What torch's weights-only unpickler refused, from its long message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = found.group(1) if found else "something"
    return f"{what} is not plain weights (a pickle that could run code)"


def unsafe_globals(directory: Path) -> list[str]:
    """``'<file>: <global>, ...'`` for each pickle under ``directory`` that names globals outside
    the allow-list, read statically (nothing is unpickled). Files torch cannot read statically
    (its legacy format) are left to the weights-only load."""
    problems = []
    with allowed():
        for file in sorted(directory.rglob("*.pt")):
            try:
                names = torch.serialization.get_unsafe_globals_in_checkpoint(str(file))
            except Exception:  # not a zip checkpoint, or a malformed pickle: the load itself refuses it
                continue
            if names:
                problems.append(f"{file}: {', '.join(sorted(names))}")
    return problems
