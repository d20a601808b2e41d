"""Where a process computes: its accelerator, process-group backend and default precision, and
which GPU kernels (FlashAttention-2) can run there, decided in one place.

DeepSpeed picks its accelerator once per process (`deepspeed.accelerator.get_accelerator`):
``DS_ACCELERATOR`` when it is set, else CUDA when torch sees a CUDA device, else the CPU.
`device_type` applies the same rule, and everything else follows it: the device a rank trains on,
NCCL or gloo, bf16 or fp32, the optimizer, whether FlashAttention, Liger or a GPU's peak apply,
the evaluation's device. DeepSpeed and the rest of a run therefore never disagree (DeepSpeed's
CPU accelerator keeping the model on the CPU while the process group is NCCL would crash ZeRO-3's
first broadcast). ``DS_ACCELERATOR=cpu`` makes a whole process CPU-only even where a GPU is
visible; a child process meant for the CPU (tests, smoke runs) also gets the GPU hidden
(`cpu_only_environment`), so nothing in it can reach the GPU by another path.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Mapping

import torch

from dprope.config import ConfigError, first_line

log = logging.getLogger(__name__)

SUPPORTED = ("cuda", "cpu")  # DS_ACCELERATOR values dprope runs on


def cuda_visible() -> bool:
    """torch sees a usable CUDA device (DeepSpeed's own detection test)."""
    return torch.cuda.device_count() > 0 and torch.cuda.is_available()


def device_type() -> str:
    """``cuda`` or ``cpu``: ``DS_ACCELERATOR`` when set, else ``cuda`` when torch sees a device."""
    requested = os.environ.get("DS_ACCELERATOR")
    if requested:
        if requested not in SUPPORTED:
            raise ConfigError("DS_ACCELERATOR", f"must be one of {', '.join(SUPPORTED)} (got {requested!r})")
        if requested == "cuda" and not cuda_visible():
            raise ConfigError("DS_ACCELERATOR", "cuda, but torch sees no CUDA device")
        return requested
    return "cuda" if cuda_visible() else "cpu"


def on_cuda() -> bool:
    return device_type() == "cuda"


def backend() -> str:
    """The process group's backend: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if on_cuda() else "gloo"


def device(local_rank: int = 0) -> torch.device:
    """The device of the process with ``local_rank`` on its node."""
    return torch.device("cuda", local_rank) if on_cuda() else torch.device("cpu")


def default_precision() -> str:
    """``trainer.precision=auto``: bf16 on CUDA, fp32 on the CPU."""
    return "bf16" if on_cuda() else "fp32"


def name_deepspeed_accelerator() -> None:
    """Before DeepSpeed is first imported: where there is no CUDA, name its accelerator
    (``DS_ACCELERATOR=cpu``) so it does not fall back to the CPU with a warning."""
    if not os.environ.get("DS_ACCELERATOR") and not cuda_visible():
        os.environ["DS_ACCELERATOR"] = "cpu"


def check_deepspeed_agrees() -> None:
    """DeepSpeed's accelerator is `device_type`'s (it was chosen when DeepSpeed was first used in
    this process: a later change of ``DS_ACCELERATOR`` does not reach it)."""
    from deepspeed.accelerator import get_accelerator

    name = get_accelerator().device_name()
    if name != device_type():
        raise RuntimeError(
            f"DeepSpeed's accelerator is {name!r} but this process computes on {device_type()!r}: "
            "set DS_ACCELERATOR before DeepSpeed is first imported"
        )


def cpu_only_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a child process meant for the CPU: no GPU visible
    (``CUDA_VISIBLE_DEVICES`` empty) and DeepSpeed's accelerator named ``cpu``."""
    child = dict(os.environ if env is None else env)
    child.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    return child


@functools.cache
def flash_attn_problem() -> str | None:
    """Why FlashAttention-2 cannot run here, or None when it can.

    transformers' own check first (`is_flash_attn_2_available`: a CUDA device and the
    ``flash-attn`` distribution, version 2.3.3 or later, so flash-attn 4, which installs a package
    of the same name, is not taken for it), then the import of its compiled kernels, which fails
    for a build made against another torch or CUDA (an undefined symbol). Cached: the answer does
    not change within a process.
    """
    if not on_cuda():
        return "no CUDA device"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "transformers finds no flash-attn 2 (package flash-attn >= 2.3.3) for this CUDA device"
    try:
        importlib.import_module("flash_attn")
    except Exception as err:  # an ABI mismatch is an ImportError; a broken build may raise anything
        return f"flash_attn does not import: {first_line(err)}"
    return None


def flash_attn_available() -> bool:
    """FlashAttention-2 can run here (`flash_attn_problem`)."""
    return flash_attn_problem() is None
