"""The training plan: every check and every derived number of a run, before anything expensive.

`plan_run` (or `plan_training`, from the parts) needs no model, no process group and no data:
it resolves the precision, the attention mode and kernel, Liger or not, the batch arithmetic
(accumulation, data and sequence parallelism), the HF config with the strategy applied and its
frequencies, the ordered model transforms (`dprope.train.transforms`) and the kind of micro-step
(`dprope.train.micro_step`). A bad value ends the run there, in one line naming the field.
`dprope.train.engine.materialise` then builds what the plan says; the trainer
(`dprope.train.loop`) and the benchmarks (`scripts/bench_train.py`, `scripts/bench_max_length.py`)
take the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dprope import accelerator
from dprope.config import ConfigError
from dprope.model import ModelConfig
from dprope.rope.registry import RopeConfig
from dprope.rope.strategies import RopeScaling
from dprope.train.attention import ATTENTION_MODES, AttentionMode, resolve_implementation
from dprope.train.config import RunConfig, TrainerConfig
from dprope.train.engine import check_pretrained, deepspeed_config, expected_world_size, model_hf_config
from dprope.train.liger import resolve_kernels
from dprope.train.long_context import check_long_context
from dprope.train.micro_step import MicroStep, choose_micro_step
from dprope.train.transforms import ModelTransform, model_transforms


def resolve_precision(trainer: TrainerConfig) -> str:
    """bf16 or fp32 (`dprope.accelerator`: auto is bf16 on CUDA); bf16 without a GPU is refused
    (CPU training runs in fp32)."""
    if trainer.precision == "auto":
        return accelerator.default_precision()
    if trainer.precision == "bf16" and not accelerator.on_cuda():
        raise ConfigError("trainer.precision", "bf16 needs a CUDA GPU; use fp32 (or auto) on CPU")
    return trainer.precision


def check_grad_accum_dtype(trainer: TrainerConfig, precision: str) -> None:
    """DeepSpeed accumulates bf16 gradients in float32 only inside a ZeRO optimizer (stage >= 1)."""
    if precision == "bf16" and trainer.grad_accum_dtype == "fp32" and trainer.zero_stage == 0:
        raise ConfigError(
            "trainer.grad_accum_dtype",
            "fp32 accumulation of bf16 gradients needs zero_stage >= 1 (or use bf16)",
        )


@dataclass(frozen=True)
class TrainingPlan:
    """A run's checked choices and derived numbers; `dprope.train.engine.materialise` builds it."""

    model: ModelConfig
    rope: RopeConfig
    trainer: TrainerConfig
    seq_len: int  # tokens per sequence (data.max_length)
    world_size: int
    precision: str  # bf16 | fp32
    mode: AttentionMode  # trainer.attention (dprope.train.attention)
    implementation: str  # the attention kernel transformers runs
    kernels: str  # liger | none
    accumulation: int  # micro-batches per optimizer step on each rank
    hf_config: Any  # the HF config to build, the strategy applied
    scaling: RopeScaling
    transforms: tuple[ModelTransform, ...]  # in order (dprope.train.transforms)
    micro_step: type[MicroStep]  # plain, Ulysses or tiled loss (dprope.train.micro_step)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def tokens_per_step(self) -> int:
        """Global batch x sequence length."""
        return self.trainer.global_batch_size * self.seq_len

    @property
    def attention(self) -> str:
        """What computes the attention, as logged at start-up."""
        return self.mode.describe(self.implementation)

    def deepspeed_config(self, load_universal: bool = False) -> dict[str, Any]:
        return deepspeed_config(self.trainer, self.world_size, self.precision, load_universal)

    def layout(self) -> str:
        """The batch arithmetic, as the start-up banner gives it."""
        trainer = self.trainer
        text = (
            f"world {self.world_size} x micro {trainer.micro_batch_size} x accumulation {self.accumulation}"
        )
        if trainer.sequence_parallel_size > 1:
            text += f" / sequence parallel {trainer.sequence_parallel_size}"
        return text


def plan_training(
    model: ModelConfig, rope: RopeConfig, trainer: TrainerConfig, seq_len: int, world_size: int | None = None
) -> TrainingPlan:
    """Check and derive everything of a run that needs no model; ``world_size``: the launcher's
    (`expected_world_size`) when None."""
    world_size = expected_world_size() if world_size is None else world_size
    precision = resolve_precision(trainer)
    mode = ATTENTION_MODES[trainer.attention]
    implementation = resolve_implementation(trainer.attn_implementation, mode)
    check_pretrained(model)
    accumulation = trainer.accumulation_steps(world_size)
    check_grad_accum_dtype(trainer, precision)
    hf_config, scaling = model_hf_config(model, rope)
    long_context = trainer.sequence_parallel_size > 1 or trainer.tiled_compute
    kernels = resolve_kernels(trainer.kernels, hf_config.model_type, long_context)
    check_long_context(trainer, hf_config, seq_len, implementation)
    return TrainingPlan(
        model=model,
        rope=rope,
        trainer=trainer,
        seq_len=seq_len,
        world_size=world_size,
        precision=precision,
        mode=mode,
        implementation=implementation,
        kernels=kernels,
        accumulation=accumulation,
        hf_config=hf_config,
        scaling=scaling,
        transforms=model_transforms(trainer, scaling.inv_freq, implementation, kernels),
        micro_step=choose_micro_step(trainer.sequence_parallel_size, trainer.tiled_compute),
    )


def plan_run(run: RunConfig, world_size: int | None = None) -> TrainingPlan:
    """`plan_training` of a whole run (its sequences are ``data.max_length`` tokens)."""
    return plan_training(run.model, run.rope, run.trainer, run.data.max_length, world_size)
