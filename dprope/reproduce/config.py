"""Typed configuration of the small-scale reproduction (`configs/reproduce/*.yaml`).

`Reproduction` gathers the composed config's parts (``model``, ``data``, ``trainer``,
``reproduce``) and checks, before any stage runs, every value a later stage would otherwise
trip over hours in: the factor, the pre-training length against the model preset, the
fine-tuning token budget, the strategy names, the evaluation lengths.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dprope.config import ConfigError, from_mapping
from dprope.data.config import DataConfig, data_config
from dprope.model import ModelConfig
from dprope.reproduce.synthetic import overhead_chars
from dprope.rope.registry import STRATEGIES, DPRoPEConfig, RopeConfig, default_config
from dprope.train.attention import ATTENTION_MODES
from dprope.train.config import TrainerConfig

TRAINING_FREE = ["none", "pi", "ntk", "yarn", "dprope", "llama3"]  # the paper's Table 10 rows, plus llama3
FINE_TUNED = ["none", "pi", "yarn", "dprope"]  # the paper's fine-tuned methods and the `none` control
ATTENTION_STRATEGIES = ["dprope", "yarn"]  # fine-tuned again under each of ATTENTION_STAGE_MODES
ATTENTION_STAGE_MODES = ["document", "anchor"]  # beside the causal fine-tuning of the same strategy


@dataclass
class SyntheticConfig:
    """The passkey documents mixed into the training corpus (`dprope.reproduce.corpus`)."""

    share: float = 0.5  # share of the training split's bytes that are synthetic; 0 = the corpus alone
    key_length: int = 2  # characters of a key: digit, upper-case letter, digit, ... (exact match of all)
    piece_chars: int = 2048  # corpus documents cut at line ends into pieces of at most this many characters
    seed: int = 0  # the generator of the synthetic documents (the evaluation prompts have their own)

    def __post_init__(self) -> None:
        if not 0 <= self.share < 1:
            raise ConfigError("share", f"must be in [0, 1) (got {self.share})")
        if self.piece_chars < 1:
            raise ConfigError("piece_chars", f"must be positive (got {self.piece_chars})")
        if self.key_length < 1:
            raise ConfigError("key_length", f"must be positive (got {self.key_length})")


@dataclass
class RetrievalConfig:
    """Retrieval accuracy at L, 2L and s x L (`dprope.reproduce.retrieval`)."""

    depths: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0]
    )  # share of the filler before the key line
    trials: int = 20  # prompts (keys) per (length, depth) cell
    seed: int = 1234  # the prompts' keys: the same for every strategy and seed

    def __post_init__(self) -> None:
        if (
            not self.depths
            or any(not 0 <= d <= 1 for d in self.depths)
            or len(set(self.depths)) != len(self.depths)
        ):
            raise ConfigError("depths", f"must be distinct fractions in [0, 1] (got {self.depths})")
        if self.trials < 1:
            raise ConfigError("trials", f"must be positive (got {self.trials})")


@dataclass
class PretrainConfig:
    """Stage a: a Llama-family model trained from scratch at the short context L."""

    length: int | None = (
        None  # L, tokens per pre-training sequence (room for a passkey document); null = model.original_max_position_embeddings
    )
    steps: int = 300  # optimizer steps
    global_batch_size: int = 16  # sequences per step
    micro_batch_size: int = 16  # sequences per forward pass
    lr: float = 2.0e-3  # from scratch: far above the fine-tuning lr
    warmup_steps: int = 20  # linear warmup

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError("steps", f"must be positive (got {self.steps})")


@dataclass
class FinetuneConfig:
    """Stage d: each strategy fine-tunes the pre-trained model at s x L for the same token budget."""

    strategies: list[str] = field(default_factory=lambda: list(FINE_TUNED))  # fine-tuned strategies
    tokens: int = 122880  # token budget per strategy; steps = tokens // (global_batch_size x s x L)
    global_batch_size: int = 8  # sequences per step
    micro_batch_size: int = 8  # sequences per forward pass
    lr: float = 5.0e-4  # constant, no warmup (as the paper)

    def __post_init__(self) -> None:
        _check_strategies("strategies", self.strategies)
        if self.tokens <= 0:
            raise ConfigError("tokens", f"must be positive (got {self.tokens})")


@dataclass
class MeasureConfig:
    """Stages c and d: perplexity at L, 2L, s x L and the loss at each position up to s x L."""

    training_free: list[str] = field(
        default_factory=lambda: list(TRAINING_FREE)
    )  # strategies applied at load
    split: str = "test"  # evaluation split of the data preset (never the training split)
    documents: int = 16  # documents of at least s x L tokens, in source order
    document_tokens: int | None = None  # each document cut to this many tokens; null = 2 x s x L
    stride: int | None = None  # sliding-window stride of the perplexity; null = L / 2
    batch_size: int = 8  # windows (or retrieval prompts) per forward pass
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self) -> None:
        _check_strategies("training_free", self.training_free)
        for name in ("documents", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")


@dataclass
class AttentionStageConfig:
    """Stage e: strategies fine-tuned again with document-masked and AnchorAttention training
    (``trainer.attention``), the same tokens as their causal fine-tuning; [] skips the stage."""

    strategies: list[str] = field(
        default_factory=lambda: list(ATTENTION_STRATEGIES)
    )  # among finetune.strategies
    modes: list[str] = field(default_factory=lambda: list(ATTENTION_STAGE_MODES))  # document | anchor

    def __post_init__(self) -> None:
        if self.strategies:
            _check_strategies("strategies", self.strategies)
        masked = [m for m in ATTENTION_MODES if m != "causal"]
        if any(m not in masked for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise ConfigError("modes", f"must be distinct modes of {', '.join(masked)} (got {self.modes})")


@dataclass
class PrecisionStageConfig:
    """Stage g: the RoPE shift analysis (`dprope.rope.precision_analysis`) on each seed's
    pre-trained model and, for reference, on a random init of the same architecture."""

    enabled: bool = True  # false skips the stage
    length: int | None = None  # tokens of the input; null = s x L
    shift: int = 4096  # constant added to every position id in the shifted run
    buckets: int = 8  # query-position buckets of the table

    def __post_init__(self) -> None:
        if self.length is not None and self.length < 2:
            raise ConfigError("length", f"must be >= 2 or null (got {self.length})")
        for name in ("shift", "buckets"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")


@dataclass
class ReproduceConfig:
    output_dir: str = (
        "outputs/reproduce/cpu"  # run directory: stages, report.md, plots; re-running resumes it
    )
    factor: float = 4.0  # s: target length s x L
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3]
    )  # each seed pre-trains one model (own random init) that all its strategies share
    num_intervals: int = 360  # B of the disturbance table and of the DPRoPE selection
    num_interpolated_dims: int | None = None  # DPRoPE's k; null = the per-pair argmin (threshold 0)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    attention: AttentionStageConfig = field(default_factory=AttentionStageConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    precision: PrecisionStageConfig = field(default_factory=PrecisionStageConfig)

    def __post_init__(self) -> None:
        if not self.factor >= 1:
            raise ConfigError("factor", f"must be >= 1 (got {self.factor})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"must be a non-empty list of distinct seeds (got {self.seeds})")
        if not self.output_dir:
            raise ConfigError("output_dir", "must be set")


def _check_strategies(name: str, strategies: list[str]) -> None:
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies or len(set(strategies)) != len(strategies):
        raise ConfigError(
            name, f"must be distinct strategies of {', '.join(STRATEGIES)} (got {', '.join(strategies)})"
        )


@dataclass
class Reproduction:
    """The whole experiment, typed and checked; the lengths every stage uses."""

    model: ModelConfig  # the architecture pre-trained from scratch (model.pretrained must be null)
    data: DataConfig  # corpus: training split for stages a and d, ``measure.split`` for c and d
    trainer: TrainerConfig  # the base trainer settings; steps, batches and lr come from ``reproduce``
    reproduce: ReproduceConfig

    @classmethod
    def from_config(cls, cfg: Any) -> Reproduction:
        """From a composed `configs/reproduction.yaml` (the entry point's builder)."""
        from omegaconf import OmegaConf

        return cls.from_plain(OmegaConf.to_container(cfg, resolve=True))

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> Reproduction:
        return cls(
            model=from_mapping(ModelConfig, plain["model"], prefix="model"),
            data=data_config(plain["data"]),
            trainer=from_mapping(TrainerConfig, plain["trainer"], prefix="trainer"),
            reproduce=from_mapping(ReproduceConfig, plain["reproduce"], prefix="reproduce"),
        )

    def __post_init__(self) -> None:
        cfg, model = self.reproduce, self.model
        if model.pretrained is not None:
            raise ConfigError("model.pretrained", "must be null: the reproduction pre-trains its own model")
        length = self.length
        if length > model.original_max_position_embeddings:
            raise ConfigError(
                "reproduce.pretrain.length",
                f"{length} exceeds the model preset's {model.original_max_position_embeddings} positions "
                f"(model.original_max_position_embeddings of '{model.name}')",
            )
        shortest = overhead_chars(cfg.synthetic.key_length) + 2
        if length < shortest:
            raise ConfigError(
                "reproduce.pretrain.length",
                f"must be >= {shortest} to hold a passkey document with BOS and EOS (got {length})",
            )
        if cfg.factor * length != self.target_length:
            raise ConfigError(
                "reproduce.factor", f"s x L must be a whole number of tokens (got {cfg.factor} x {length})"
            )
        step_tokens = cfg.finetune.global_batch_size * self.target_length
        if cfg.finetune.tokens < step_tokens:
            raise ConfigError(
                "reproduce.finetune.tokens",
                f"{cfg.finetune.tokens} is less than one step (global_batch_size x s x L = {step_tokens})",
            )
        if self.data.train_split == cfg.measure.split or cfg.measure.split not in self.data.eval_splits:
            raise ConfigError(
                "reproduce.measure.split",
                f"must be one of data.eval_splits {self.data.eval_splits} (got {cfg.measure.split!r})",
            )
        if not 1 <= self.stride < length:
            raise ConfigError(
                "reproduce.measure.stride", f"must be in [1, L - 1 = {length - 1}] (got {self.stride})"
            )
        if self.document_tokens < self.target_length:
            raise ConfigError(
                "reproduce.measure.document_tokens",
                f"must be at least s x L = {self.target_length} (got {self.document_tokens})",
            )
        if cfg.num_intervals < 1:
            raise ConfigError("reproduce.num_intervals", f"must be >= 1 (got {cfg.num_intervals})")
        missing = [s for s in cfg.attention.strategies if s not in cfg.finetune.strategies]
        if missing and cfg.attention.modes:
            raise ConfigError(
                "reproduce.attention.strategies",
                f"{', '.join(missing)} not in reproduce.finetune.strategies (the causal fine-tuning they are compared with)",
            )
        if cfg.attention.strategies and cfg.attention.modes and not self.data.add_bos:
            raise ConfigError(
                "data.add_bos", "reproduce.attention needs documents packed with a BOS token (the anchor)"
            )
        # every strategy must be buildable for this geometry: errors surface now, not at stage d
        for name in sorted({*cfg.measure.training_free, *cfg.finetune.strategies}):
            try:
                self.pretrained_model(".").scaling(self.rope(name))
            except ConfigError as err:
                field_name = err.field.replace("rope.", "reproduce.", 1)
                raise ConfigError(field_name, f"{name}: {str(err).split(': ', 1)[1]}") from None

    @property
    def length(self) -> int:
        """L, the pre-training context."""
        return self.reproduce.pretrain.length or self.model.original_max_position_embeddings

    @property
    def target_length(self) -> int:
        """s x L, the context every strategy extends to."""
        return round(self.reproduce.factor * self.length)

    @property
    def lengths(self) -> list[int]:
        """Evaluation lengths L, 2L, s x L (the duplicates of a small s removed)."""
        return sorted({self.length, min(2 * self.length, self.target_length), self.target_length})

    @property
    def stride(self) -> int:
        return self.reproduce.measure.stride or max(1, self.length // 2)

    @property
    def document_tokens(self) -> int:
        return self.reproduce.measure.document_tokens or 2 * self.target_length

    @property
    def finetune_steps(self) -> int:
        ft = self.reproduce.finetune
        return ft.tokens // (ft.global_batch_size * self.target_length)

    def training_data(self, corpus: str, max_length: int) -> DataConfig:
        """The data preset turned into the mixed corpus file (`dprope.reproduce.corpus`), packed
        into ``max_length``-token sequences; separators, seed and threads stay the preset's."""
        return dataclasses.replace(
            self.data,
            name=f"{self.data.name}-passkey",
            source="files",
            hub_id=None,
            hub_config=None,
            revision=None,
            paths={self.data.train_split: [corpus]},
            text_field="text",
            max_documents=None,  # applied when the corpus was written
            max_length=max_length,
        )

    def rope(self, name: str) -> RopeConfig:
        """A strategy at factor s with its default parameters (DPRoPE with the run's B and k)."""
        cfg = self.reproduce
        if name == "dprope":
            try:
                return DPRoPEConfig(
                    factor=cfg.factor,
                    num_intervals=cfg.num_intervals,
                    num_interpolated_dims=cfg.num_interpolated_dims,
                )
            except ConfigError as err:
                raise ConfigError(f"reproduce.{err.field}", str(err).split(": ", 1)[1]) from None
        return default_config(name, cfg.factor)

    def pretrained_model(self, export_dir: str) -> ModelConfig:
        """The model preset pointing at the pre-trained export (its tokenizer travels with it)."""
        return dataclasses.replace(
            self.model, pretrained=export_dir, tokenizer=None, original_max_position_embeddings=self.length
        )
