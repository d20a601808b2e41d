"""The typed config of the trainer (`configs/trainer/*.yaml`) and of a whole run.

`RunConfig` gathers a run's typed parts. Defaults are the paper's (appendix B.1): AdamW (0.9, 0.999), lr 2e-5, no warmup, no weight
decay, DeepSpeed ZeRO-3, global batch 64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dprope.config import ConfigError, check_choice, to_typed
from dprope.data.config import DataConfig
from dprope.model import ModelConfig
from dprope.rope.registry import RopeConfig
from dprope.rope.rotation import ROPE_PRECISIONS
from dprope.tracking import LoggerConfig
from dprope.train.attention import ATTENTION_MODES

PRECISIONS = ("auto", "bf16", "fp32")
ATTN_IMPLEMENTATIONS = ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager")
KERNELS = ("auto", "liger", "none")
GRAD_ACCUM_DTYPES = ("fp32", "bf16")
# Exit code of a run stopped by SIGTERM/SIGUSR1 after saving a checkpoint (EX_TEMPFAIL): a batch
# script requeues the job on it, and `trainer.resume=auto` continues from that checkpoint.
EXIT_PREEMPTED = 75
# Exit code of a run stopped by a non-finite loss or gradient norm (no checkpoint is written).
EXIT_NON_FINITE = 3
# Exit code of a resume whose verified checkpoint DeepSpeed cannot load (not a configuration error).
EXIT_LOAD_FAILED = 4
# Exit code of a run whose checkpoint or export could not be written (a full disk): the partial
# files are removed and the previous checkpoint stays in charge.
EXIT_SAVE_FAILED = 5


@dataclass
class TrainerConfig:
    output_dir: str = "outputs/train/run"  # run directory: checkpoints/, metrics.jsonl, config.yaml, hf/
    steps: int = 1000  # optimizer steps (paper: 1000 at 8k, 500 at 16k)
    global_batch_size: int = 64  # sequences per optimizer step = micro x accumulation x world size
    micro_batch_size: int = 1  # sequences per forward pass on one process
    lr: float = 2e-5  # AdamW learning rate, constant after warmup
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many steps (paper: none)
    grad_clip: float = (
        1.0  # max global gradient norm; 0 disables (the paper states none; 1.0 as YaRN/LongLoRA)
    )
    zero_stage: int = 3  # DeepSpeed ZeRO stage (0-3)
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states and step on the CPU
    offload_params: bool = False  # ZeRO-3 parameter offload to the CPU
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    attn_implementation: str = (
        "auto"  # auto (attention.resolve_implementation) | flash_attention_2 | flex_attention | sdpa | eager
    )
    attention: str = "causal"  # causal (whole window, the paper) | document | anchor (AnchorAttention): dprope.train.attention
    rope_precision: str = "model"  # model (transformers' rotation) | fp32 (q/k rotated in float32, cast back)
    gradient_checkpointing: bool = True  # recompute activations in backward (needed at 8k/16k)
    kernels: str = (
        "auto"  # auto (liger when CUDA is present and liger-kernel imports, else none) | liger | none
    )
    grad_accum_dtype: str = (
        "fp32"  # dtype ZeRO accumulates gradients in across micro-steps under bf16: fp32 | bf16
    )
    save_every: int = 100  # checkpoint every N steps (0 = only at the end and on a signal)
    keep_last: int = 2  # complete checkpoints kept; older ones are deleted after a new one is complete
    resume: str = (
        "auto"  # auto (latest checkpoint in output_dir, if any) | never | path of a checkpoint directory
    )
    dist_timeout_minutes: float = 60.0  # process-group timeout: how long ranks wait in a collective, e.g. for rank 0 building the data cache, converting or writing a 13B checkpoint
    seed: int = 42  # model init, data order and RNG streams
    log_every: int = 1  # console/wandb logging period in steps (metrics.jsonl gets every step)
    export: bool = True  # write <output_dir>/hf (safetensors + config + tokenizer) at the end
    peak_tflops: float | None = (
        None  # per-device peak for MFU; null = known GPUs (A100, H100, H200), else MFU not reported
    )
    sequence_parallel_size: int = (
        1  # Ulysses SP (DeepSpeed ALST): ranks sharing each sequence; data-parallel degree = world / this
    )
    tiled_compute: bool = False  # DeepSpeed ALST TiledMLP and TiledFusedLogitsLoss: MLP and loss tile by tile
    tiled_shards: int | None = (
        None  # tiles per sequence (shard); null = MLP tiles of hidden_size tokens, logits tiles <= 1 GiB fp32
    )
    offload_activations: bool = False  # gradient-checkpoint inputs to pinned CPU memory (DeepSpeed); GPU only, needs gradient_checkpointing

    def __post_init__(self) -> None:
        positive = ("steps", "global_batch_size", "micro_batch_size", "log_every", "keep_last")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                "global_batch_size",
                f"{self.global_batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}",
            )
        if not self.lr > 0:
            raise ConfigError("lr", f"must be positive (got {self.lr})")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("betas", f"must be two numbers in [0, 1) (got {self.betas})")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (got {getattr(self, name)})")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError("zero_stage", f"must be 0, 1, 2 or 3 (got {self.zero_stage})")
        if self.offload_params and self.zero_stage != 3:
            raise ConfigError("offload_params", "needs zero_stage 3")
        check_choice(self, "precision", PRECISIONS)
        check_choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)
        check_choice(self, "kernels", KERNELS)
        if self.grad_accum_dtype not in GRAD_ACCUM_DTYPES:
            raise ConfigError(
                "grad_accum_dtype",
                f"must be a float type, one of {', '.join(GRAD_ACCUM_DTYPES)} (got {self.grad_accum_dtype!r})",
            )
        check_choice(self, "attention", ATTENTION_MODES)
        check_choice(self, "rope_precision", ROPE_PRECISIONS)
        if not self.dist_timeout_minutes > 0:
            raise ConfigError("dist_timeout_minutes", f"must be positive (got {self.dist_timeout_minutes})")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError("peak_tflops", f"must be positive (got {self.peak_tflops})")
        if not self.output_dir:
            raise ConfigError("output_dir", "must be set")
        if self.sequence_parallel_size < 1:
            raise ConfigError("sequence_parallel_size", f"must be >= 1 (got {self.sequence_parallel_size})")
        if self.sequence_parallel_size > 1 and self.zero_stage != 3:
            # measured with DeepSpeed 0.19.8: ZeRO stages 0-2 average the Ulysses gradients over the
            # data-parallel degree only, so they come out sequence_parallel_size times too large
            # (and clipping then acts on the wrong norm); ZeRO-3 gives the single-GPU gradient
            raise ConfigError("sequence_parallel_size", "needs zero_stage 3 (stages 0-2 scale the gradients)")
        if self.tiled_shards is not None and self.tiled_shards < 1:
            raise ConfigError("tiled_shards", f"must be >= 1 or null (got {self.tiled_shards})")
        if self.offload_activations and not self.gradient_checkpointing:
            raise ConfigError(
                "offload_activations", "offloads checkpointed activations: needs gradient_checkpointing"
            )

    def data_parallel_size(self, world_size: int) -> int:
        """Model replicas: the world size over the ranks that share one sequence."""
        if world_size % self.sequence_parallel_size:
            raise ConfigError(
                "trainer.sequence_parallel_size",
                f"{self.sequence_parallel_size} does not divide the world size {world_size}",
            )
        return world_size // self.sequence_parallel_size

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each process: global batch / (micro x data parallel).

        The global batch must divide by micro x world size (not only micro x data parallel): then
        the accumulation is a multiple of the sequence-parallel size, and every step ends where
        DeepSpeed's SP loader adapter has used up the sequences it gathered from the group, which
        is what makes resuming exact (`dprope.train.long_context`).
        """
        data_parallel = self.data_parallel_size(world_size)
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                "trainer.global_batch_size",
                f"{self.global_batch_size} is not divisible by micro_batch_size x world size "
                f"= {self.micro_batch_size} x {world_size}",
            )
        return self.global_batch_size // (self.micro_batch_size * data_parallel)


@dataclass
class RunConfig:
    """Everything a training run is made of, typed."""

    model: ModelConfig
    rope: RopeConfig
    data: DataConfig
    trainer: TrainerConfig
    logger: LoggerConfig

    def __post_init__(self) -> None:
        # the packing conventions `data` leaves null follow the attention mode (anchor: the authors')
        self.data = self.data.resolved(ATTENTION_MODES[self.trainer.attention].packing)
        if ATTENTION_MODES[self.trainer.attention].needs_bos and not self.data.add_bos:
            raise ConfigError(
                "data.add_bos",
                f"trainer.attention={self.trainer.attention} needs documents packed with a BOS token "
                "(the document start and the anchor); set data.add_bos=true",
            )

    @classmethod
    def from_config(cls, cfg: Any) -> RunConfig:
        """The typed run from a composed config (`configs/train.yaml` and its overrides): the one
        builder that training, data preparation and submission share. Errors name the field."""
        run = cls(
            **{name: to_typed(cfg[name], name) for name in ("model", "rope", "data", "trainer", "logger")}
        )
        target = run.model.scaling(run.rope).target_length
        if run.data.max_length > target:
            raise ConfigError(
                "data.max_length", f"{run.data.max_length} exceeds the target context s x L = {target}"
            )
        return run
