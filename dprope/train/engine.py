"""The one place that knows about DeepSpeed: process group, ZeRO config, model wrapping (DeepSpeed's
long-sequence parts are applied here, from `dprope.train.long_context`).

Model code stays single-device; `build_engine` loads (or randomly initialises) the HF model with
the RoPE strategy already in its config, wraps it with `deepspeed.initialize`, and then puts the
strategy's float32 frequencies back into every rotary module (a bf16 cast of module buffers must
never reach the angles: docs/method-notes.md, section 8).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from dprope.config import ConfigError, first_line, local_path
from dprope.model import ModelConfig, apply_rope, flash_attn_available
from dprope.rope.registry import RopeConfig
from dprope.rope.rotation import apply_rope_precision
from dprope.rope.strategies import RopeScaling
from dprope.train.config import TrainerConfig
from dprope.train.liger import apply_kernels
from dprope.train.long_context import (
    LongContext,
    apply_tiled_mlp,
    capture_final_hidden,
    register_sequence_parallel,
)

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expected_world_size() -> int:
    """The world size the launcher announced (1 under plain `python`), known before joining."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


@contextlib.contextmanager
def main_process_first(runtime: Runtime):
    """Rank 0 runs the block first (for example building a cache); the others wait, then run it."""
    if not runtime.is_main:
        torch.distributed.barrier()
    yield
    if runtime.is_main and runtime.world_size > 1:
        torch.distributed.barrier()


def silence_collective_deprecations() -> None:
    """Hide the two FutureWarnings torch prints on each ZeRO step for DeepSpeed's calls of
    `all_gather_into_tensor` and `reduce_scatter_tensor` (a rename in torch, nothing a user can
    act on). The filter matches those two messages raised from torch's c10d wrapper only, so
    every other warning still shows."""
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
        category=FutureWarning,
        module=r"torch\.distributed\.c10d_logger",
    )


def init_distributed(timeout_minutes: float = 60.0) -> Runtime:
    """Join (or, under plain `python`, create) the process group.

    Works under `deepspeed`, `torchrun` and `srun` (their environment names rank and world size)
    and under plain `python` (a group of one). gloo on CPU, nccl on GPU. ``timeout_minutes``
    bounds every collective, including the barriers where ranks wait for rank 0 to build the data
    cache, convert a checkpoint or write a checkpoint (`trainer.dist_timeout_minutes`).
    """
    import deepspeed

    silence_collective_deprecations()
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        os.environ.update(
            RANK=os.environ["SLURM_PROCID"],
            WORLD_SIZE=os.environ["SLURM_NTASKS"],
            LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"),
        )
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", "0")
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    deepspeed.init_distributed(
        dist_backend="nccl" if cuda else "gloo",
        auto_mpi_discovery=False,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Runtime(int(os.environ["RANK"]), local_rank, int(os.environ["WORLD_SIZE"]), device)


def resolve_precision(trainer: TrainerConfig) -> str:
    """bf16 or fp32; bf16 without a GPU is refused (CPU training runs in fp32)."""
    if trainer.precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    if trainer.precision == "bf16" and not torch.cuda.is_available():
        raise ConfigError("trainer.precision", "bf16 needs a CUDA GPU; use fp32 (or auto) on CPU")
    return trainer.precision


def resolve_attention(trainer: TrainerConfig) -> str:
    """flash_attention_2 when flash-attn imports (and a GPU is present); else, for document and
    anchor attention on a GPU, FlexAttention (its block mask skips the masked blocks, where SDPA
    would read a dense mask); else PyTorch SDPA."""
    if trainer.attn_implementation != "auto":
        if trainer.attn_implementation == "flash_attention_2" and not flash_attn_available():
            raise ConfigError(
                "trainer.attn_implementation", "flash_attention_2 needs flash-attn and a CUDA GPU"
            )
        return trainer.attn_implementation
    if flash_attn_available():
        return "flash_attention_2"
    if trainer.attention != "causal" and torch.cuda.is_available():
        return "flex_attention"
    return "sdpa"


def check_grad_accum_dtype(trainer: TrainerConfig, precision: str) -> None:
    """DeepSpeed accumulates bf16 gradients in float32 only inside a ZeRO optimizer (stage >= 1)."""
    if precision == "bf16" and trainer.grad_accum_dtype == "fp32" and trainer.zero_stage == 0:
        raise ConfigError(
            "trainer.grad_accum_dtype",
            "fp32 accumulation of bf16 gradients needs zero_stage >= 1 (or use bf16)",
        )


def deepspeed_config(
    trainer: TrainerConfig, world_size: int, precision: str, load_universal: bool = False
) -> dict[str, Any]:
    """The DeepSpeed config generated from the trainer config (no separate JSON to keep in sync).

    Under bf16, ``data_types.grad_accum_dtype`` is ``trainer.grad_accum_dtype`` (fp32 by default):
    ZeRO then keeps each rank's gradient partition in float32 and adds every micro-step's bf16
    gradient into it, instead of summing up to 64 micro-batches in bf16 (8 significant bits).
    fp32 runs accumulate in fp32 anyway. ``load_universal``: the resume loads a universal
    checkpoint (saved on another world size).
    """
    cpu = not torch.cuda.is_available()
    zero: dict[str, Any] = {"stage": trainer.zero_stage}
    if trainer.zero_stage == 3:
        zero.update(
            overlap_comm=not cpu,
            contiguous_gradients=True,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if trainer.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not cpu}
    if trainer.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": not cpu}
    config: dict[str, Any] = {
        "train_batch_size": trainer.global_batch_size,
        "train_micro_batch_size_per_gpu": trainer.micro_batch_size,
        "gradient_accumulation_steps": trainer.accumulation_steps(world_size),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": trainer.lr,
                "betas": list(trainer.betas),
                "eps": trainer.eps,
                "weight_decay": trainer.weight_decay,
                # DeepSpeed's fused Adam is CUDA-only; torch's AdamW on CPU (ZeRO-Offload uses DeepSpeedCPUAdam)
                "torch_adam": cpu and not trainer.offload_optimizer,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "data_types": {"grad_accum_dtype": trainer.grad_accum_dtype if precision == "bf16" else "fp32"},
        "gradient_clipping": trainer.grad_clip,
        "steps_per_print": 10**9,  # our own logging reports progress
        "wall_clock_breakdown": False,
    }
    if trainer.sequence_parallel_size > 1:
        # DeepSpeed then counts train_batch_size over world / SP data-parallel replicas
        config["sequence_parallel_size"] = trainer.sequence_parallel_size
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    if trainer.warmup_steps > 0:
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": trainer.lr,
                "warmup_num_steps": trainer.warmup_steps,
                "warmup_type": "linear",
            },
        }
    return config


def check_pretrained(model: ModelConfig) -> None:
    """A local-looking ``model.pretrained`` must be a directory holding a config (before any load)."""
    if model.pretrained is None:
        return
    path = local_path(model.pretrained)
    if path is not None and not (path / "config.json").is_file():
        raise ConfigError("model.pretrained", f"no model directory (config.json) at {model.pretrained}")


def model_hf_config(model: ModelConfig, rope: RopeConfig) -> tuple[Any, RopeScaling]:
    """The HF config to build: the checkpoint's (or the preset's, for random init) with the strategy
    applied. The checkpoint's rotary numbers must match the preset's."""
    if model.pretrained is None:
        hf_config = model.hf_config()
    else:
        from transformers import AutoConfig

        try:
            hf_config = AutoConfig.from_pretrained(model.pretrained)
        except (OSError, ValueError) as err:
            raise ConfigError(
                "model.pretrained", f"cannot load {model.pretrained!r}: {first_line(err)}"
            ) from None
        base = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta")
        if base is not None and float(base) != model.rope_theta:
            raise ConfigError(
                "model.rope_theta", f"{model.rope_theta} does not match the checkpoint's {base}"
            )
    scaling = apply_rope(hf_config, rope, model)
    return hf_config, scaling


def build_model(model: ModelConfig, hf_config: Any, precision: str, attention: str, seed: int):
    """The HF causal LM: pretrained weights, or a seeded random init for presets without them."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if model.pretrained is None:
        torch.manual_seed(seed)
        hf_config._attn_implementation = attention
        return AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attention)
    return AutoModelForCausalLM.from_pretrained(
        model.pretrained, config=hf_config, dtype=dtype, attn_implementation=attention
    )


def rotary_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every module holding rotary frequencies (`inv_freq`)."""
    return [m for m in module.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]


def restore_rotary_frequencies(module: torch.nn.Module, scaling: RopeScaling) -> int:
    """Put the strategy's float32 frequencies back into every rotary module; returns how many."""
    modules = rotary_modules(module)
    for rotary in modules:
        inv_freq = scaling.inv_freq.to(device=rotary.inv_freq.device, dtype=torch.float32)
        rotary.register_buffer("inv_freq", inv_freq.clone(), persistent=False)
        if hasattr(rotary, "original_inv_freq"):
            rotary.original_inv_freq = inv_freq.clone()
    return len(modules)


def build_engine(
    model_cfg: ModelConfig,
    hf_config: Any,
    scaling: RopeScaling,
    trainer: TrainerConfig,
    runtime: Runtime,
    precision: str,
    attention: str,
    kernels: str = "none",
    plan: LongContext | None = None,
    load_universal: bool = False,
):
    """Load the model from ``hf_config`` (the strategy already applied, see `model_hf_config`),
    apply the resolved ``kernels`` (`dprope.train.liger`) and wrap it in a DeepSpeed engine in
    training mode. Returns ``(engine, ds_config)``.

    With a `LongContext` plan, DeepSpeed's ALST parts go in before the wrap: Ulysses attention and
    its process groups (``plan.group``), tiled MLPs, the capture of the final hidden states for the
    tiled logits-loss. ``load_universal``: the resume loads a universal checkpoint."""
    import deepspeed

    ds_config = deepspeed_config(trainer, runtime.world_size, precision, load_universal)
    keep_alive = None
    if trainer.zero_stage == 3 and model_cfg.pretrained is not None:
        # partitioned loading: each rank materialises only its shard of the checkpoint
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must live while the model loads)
    model = build_model(model_cfg, hf_config, precision, attention, trainer.seed)
    patched = apply_rope_precision(model, trainer.rope_precision)  # before the wrap (dprope.rope.rotation)
    log.info("rotary rotation precision: %s (%d module(s) patched)", trainer.rope_precision, patched)
    if trainer.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    apply_kernels(model, kernels, trainer.zero_stage)
    mpu = None
    if plan is not None:
        mpu = register_sequence_parallel(model, trainer, attention)
        if mpu is not None:
            plan.group = mpu.get_sequence_parallel_group()
        if plan.tiled:
            log.info("tiled MLP in %d module(s)", apply_tiled_mlp(model, trainer))
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config, mpu=mpu
    )
    engine.train()  # from_pretrained returns the model in eval mode: dropout must be on in training
    if plan is not None and plan.tiled:
        # after the wrap: ZeRO-3's own hooks come first, so the captured output is the one whose
        # backward gathers the norm's partitioned weight again
        capture_final_hidden(engine.module, plan)
    restored = restore_rotary_frequencies(engine.module, scaling)
    log.info("rotary frequencies restored in float32 in %d module(s)", restored)
    del keep_alive
    return engine, ds_config
