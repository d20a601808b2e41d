"""The one place that knows about DeepSpeed: process group, ZeRO config, model wrapping.

Model code stays single-device; `materialise` builds what a training plan (`dprope.train.plan`)
says: it loads (or randomly initialises) the HF model with the RoPE strategy already in its
config, applies the plan's model transforms of the phase before the wrap
(`dprope.train.transforms`), wraps the model with `deepspeed.initialize`, applies those after the
wrap (among them the strategy's float32 frequencies put back into every rotary module: a bf16
cast of module buffers must never reach the angles, docs/method-notes.md, section 8), logs the
transforms in one line and builds the plan's kind of micro-step (`dprope.train.micro_step`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from dprope import accelerator
from dprope.config import ConfigError, first_line, local_path
from dprope.inputs import check_safetensors
from dprope.model import ModelConfig, apply_rope
from dprope.rope.registry import RopeConfig
from dprope.rope.strategies import RopeScaling
from dprope.train.config import TrainerConfig

if TYPE_CHECKING:
    from dprope.train.micro_step import MicroStep
    from dprope.train.plan import TrainingPlan
    from dprope.train.transforms import ModelParts

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


@contextlib.contextmanager
def without_inference_comm_op():
    """Start DeepSpeed's communication backend without its shared-memory all-reduce op.

    On the CPU accelerator, `deepspeed.init_distributed` probes which of DeepSpeed's C++ ops this
    machine could build (compiling a test program: the two ``gcc ... test.c`` lines) and then
    builds or loads ``deepspeed_shm_comm`` (``... built successfully``; a JIT compile of minutes
    on a first run). That op serves only ``inference_all_reduce``, DeepSpeed's tensor-parallel
    inference; training never calls it, and without it DeepSpeed uses torch.distributed's
    all-reduce there. The op's builder is replaced for the duration of this call only (the
    backend created here keeps no op); nothing else of DeepSpeed changes.
    """
    import importlib

    # the module itself: `import deepspeed.comm.torch as m` gives torch (deepspeed.comm's attribute)
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    build = ds_torch.build_shm_op
    ds_torch.build_shm_op = lambda: None
    try:
        yield
    finally:
        ds_torch.build_shm_op = build


def init_distributed(timeout_minutes: float = 60.0) -> Runtime:
    """Join (or, under plain `python`, create) the process group.

    Works under `deepspeed`, `torchrun` and `srun` (their environment names rank and world size)
    and under plain `python` (a group of one). The device, nccl or gloo, and DeepSpeed's
    accelerator all come from `dprope.accelerator`. ``timeout_minutes``
    bounds every collective, including the barriers where ranks wait for rank 0 to build the data
    cache, convert a checkpoint or write a checkpoint (`trainer.dist_timeout_minutes`).
    """
    accelerator.name_deepspeed_accelerator()
    import deepspeed

    accelerator.check_deepspeed_agrees()
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
    local_rank = int(os.environ["LOCAL_RANK"])
    device = accelerator.device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with without_inference_comm_op():
        if not torch.distributed.is_initialized():
            atexit.register(destroy_gloo_group)
        deepspeed.init_distributed(
            dist_backend=accelerator.backend(),
            auto_mpi_discovery=False,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    return Runtime(int(os.environ["RANK"]), local_rank, int(os.environ["WORLD_SIZE"]), device)


def destroy_gloo_group() -> None:
    """At the process's exit, destroy a gloo process group that is still alive.

    A process that exits with its gloo group alive can abort in the interpreter's finalization
    (``terminate called without an active exception``, SIGABRT) while the group's worker threads
    are torn down, and the launcher then reports the whole job as failed. Destroying a gloo group
    is local to the process, so this is safe however the process ends. NCCL groups are left to
    the exit: destroying them can wait on ranks that are gone. Registered with `atexit` (not
    called at the end of a run: DeepSpeed keeps references to its groups, which later runs of the
    same process, such as a local multirun, reuse)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        dist.destroy_process_group()


def optimizer_choice(cpu: bool, offload_optimizer: bool) -> dict[str, Any]:
    """DeepSpeed's AdamW parameters that pick the implementation (see `deepspeed_config`):
    torch's AdamW (fused on CUDA), or DeepSpeed's CPU Adam under ZeRO-Offload."""
    if offload_optimizer:
        return {"torch_adam": False}
    return {"torch_adam": True} if cpu else {"torch_adam": True, "fused": True}


def deepspeed_config(
    trainer: TrainerConfig, world_size: int, precision: str, load_universal: bool = False
) -> dict[str, Any]:
    """The DeepSpeed config generated from the trainer config (no separate JSON to keep in sync).

    Under bf16, ``data_types.grad_accum_dtype`` is ``trainer.grad_accum_dtype`` (fp32 by default):
    ZeRO then keeps each rank's gradient partition in float32 and adds every micro-step's bf16
    gradient into it, instead of summing up to 64 micro-batches in bf16 (8 significant bits).
    fp32 runs accumulate in fp32 anyway. ``load_universal``: the resume loads a universal
    checkpoint (saved on another world size).

    The optimizer is torch's AdamW (DeepSpeed's ``torch_adam``), fused on CUDA: it needs no
    compilation at run time, where DeepSpeed's own FusedAdam is built on first use with ``nvcc``
    (the CUDA toolkit of torch's CUDA version) and ``ninja``. Under ZeRO-Offload
    (``trainer.offload_optimizer``) the step runs on the CPU in DeepSpeed's CPU Adam, which
    DeepSpeed compiles once per machine from C++ (a C++ compiler and ``ninja``, no CUDA toolkit).
    """
    cpu = not accelerator.on_cuda()
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
                **optimizer_choice(cpu, trainer.offload_optimizer),
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
    """A local-looking ``model.pretrained`` must be a directory holding a config and whole
    safetensors files (before any load)."""
    if model.pretrained is None:
        return
    path = local_path(model.pretrained)
    if path is not None and path.is_file():
        raise ConfigError("model.pretrained", f"{model.pretrained} is a file, not a model directory")
    if path is not None and not (path / "config.json").is_file():
        raise ConfigError("model.pretrained", f"no model directory (config.json) at {model.pretrained}")
    if path is not None:
        check_safetensors(path, "model.pretrained")  # a truncated weight file, from its header


def model_hf_config(model: ModelConfig, rope: RopeConfig) -> tuple[Any, RopeScaling]:
    """The HF config to build: the checkpoint's (or the preset family's, for random init) with the
    strategy applied to the checkpoint's own rotary geometry, which the preset must agree with
    (`dprope.model.ModelConfig.checked_geometry`): one line, before any weight loads."""
    if model.pretrained is None:
        return (hf_config := model.hf_config()), apply_rope(hf_config, rope, model)
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(model.pretrained)
    except (OSError, ValueError) as err:
        raise ConfigError(
            "model.pretrained", f"cannot load {model.pretrained!r}: {first_line(err)}"
        ) from None
    return hf_config, apply_rope(hf_config, rope, model, model.pretrained)


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


@dataclass
class Materialised:
    """What `materialise` built from a plan."""

    engine: Any  # deepspeed.DeepSpeedEngine, in training mode
    ds_config: dict[str, Any]
    parts: ModelParts  # what the model transforms handed on (SP group, captured hidden states)
    micro_step: MicroStep  # forward and backward of one micro-batch on this engine
    applied: list[str]  # what each model transform did, in order


def materialise(plan: TrainingPlan, runtime: Runtime, load_universal: bool = False) -> Materialised:
    """Build the model of ``plan``, apply its transforms around the DeepSpeed wrap, log them in one
    line and build its micro-step. ``load_universal``: the resume loads a universal checkpoint."""
    import deepspeed

    from dprope.train.transforms import AFTER_WRAP, BEFORE_WRAP, ModelParts, apply_transforms

    if runtime.world_size != plan.world_size:
        raise ValueError(
            f"the plan is for world size {plan.world_size}, this process group has {runtime.world_size}"
        )
    ds_config = plan.deepspeed_config(load_universal)
    keep_alive = None
    if plan.trainer.zero_stage == 3 and plan.model.pretrained is not None:
        # partitioned loading: each rank materialises only its shard of the checkpoint
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must live while the model loads)
    model = build_model(plan.model, plan.hf_config, plan.precision, plan.implementation, plan.trainer.seed)
    parts = ModelParts()
    applied = apply_transforms(model, plan.transforms, BEFORE_WRAP, parts)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config, mpu=parts.mpu
    )
    engine.train()  # from_pretrained returns the model in eval mode: dropout must be on in training
    applied += ["DeepSpeed wrap", *apply_transforms(engine.module, plan.transforms, AFTER_WRAP, parts)]
    log.info("model transforms: %s", " -> ".join(applied))
    del keep_alive
    micro_step = plan.micro_step.build(engine, runtime.device, plan, parts)
    return Materialised(engine, ds_config, parts, micro_step, applied)
