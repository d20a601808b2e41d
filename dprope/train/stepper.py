"""One optimizer step, and where a run stands.

`Stepper` runs ``accumulation`` micro-steps (`dprope.train.micro_step`) on the engine and ends
with the step's one host sync: a single all-reduce of (loss, stop flag, gradient norm), which the
console, metrics.jsonl and the non-finite guard all read. The trainer (`dprope.train.loop`) and
the benchmarks (`scripts/bench_train.py`, `scripts/bench_max_length.py`) step through it alike.
`RunState` is what the steps advance and a checkpoint stores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from dprope.train.checkpoint import TrainerState


def is_finite(value: float | None) -> bool:
    """A reported number is finite, or absent."""
    return value is None or math.isfinite(value)


@dataclass
class StepResult:
    loss: float  # mean over the global batch
    grad_norm: float | None
    stop_requested: bool  # a rank got SIGTERM/SIGUSR1
    elapsed: float  # seconds

    @property
    def finite(self) -> bool:
        return is_finite(self.loss) and is_finite(self.grad_norm)


class Stepper:
    """Optimizer steps of ``engine``: ``accumulation`` micro-batches from ``batches`` each."""

    def __init__(
        self,
        engine,
        micro_step: Callable[[dict[str, Any]], torch.Tensor],
        batches: Iterator[dict[str, Any]],
        accumulation: int,
        device: torch.device,
    ):
        self.engine, self.micro_step, self.batches = engine, micro_step, batches
        self.accumulation, self.device = accumulation, device

    def step(self, stop: Any = False) -> StepResult:
        """One optimizer step; ``stop`` (truthy once a stop signal arrived, `StopRequest`) is
        shared with every rank in the step's one host sync."""
        engine, device = self.engine, self.device
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device, dtype=torch.float32)
        for _ in range(self.accumulation):
            loss = self.micro_step(next(self.batches))
            engine.step()
            loss_sum += loss.float()
        # ZeRO-3 keeps the global gradient norm as a device tensor: read it in the same single sync
        reported = engine.get_global_grad_norm()
        norm = torch.as_tensor(0.0 if reported is None else reported, device=device, dtype=torch.float32)
        flag = torch.tensor(float(bool(stop)), device=device)
        shared = torch.stack([loss_sum, flag, norm.detach().reshape(())])
        world = 1
        if dist.is_initialized():
            dist.all_reduce(shared)
            world = dist.get_world_size()
        loss_value, stop_flag, norm_sum = shared.tolist()  # the step's one host sync
        return StepResult(
            # every rank holds its SP group's loss: the mean over ranks is the mean over the global batch
            loss=loss_value / (self.accumulation * world),
            grad_norm=None if reported is None else norm_sum / world,  # the same global norm on every rank
            stop_requested=stop_flag > 0,
            elapsed=time.perf_counter() - start,
        )


@dataclass
class RunState:
    """Where a run stands: what a checkpoint stores, and the step last saved."""

    trainer_state: TrainerState = field(default_factory=TrainerState)  # step, consumed samples, world size
    last_saved: int = -1  # step of the newest checkpoint this run wrote or resumed from (-1: none)

    @property
    def step(self) -> int:
        return self.trainer_state.step

    def advance(self, global_batch_size: int) -> None:
        """One optimizer step done."""
        self.trainer_state.step += 1
        self.trainer_state.consumed_samples += global_batch_size
