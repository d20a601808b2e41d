"""Model presets and families: the rotary geometry every part needs, and the HF config a run
builds on.

`ModelConfig` is the schema of `configs/model/*.yaml`. The RoPE analysis needs only its rotary
geometry (``head_dim``, ``partial_rotary_factor``, ``rope_theta``, the pre-training
``rope_type`` and ``rope_scaling``, ``original_max_position_embeddings``; checked by
`dprope.rope.geometry.RotaryGeometry`), never weights. Training loads ``pretrained`` (a hub id or
a local directory) or, when it is null, initialises a random model of the preset's ``family``
from the architecture fields.

With ``pretrained`` set, the rotary numbers come from the checkpoint's config
(`checkpoint_geometry`): the family must be one of `FAMILIES`, the model must have a rotary
embedding whose rope type the strategies compose with, and every number the preset states must
agree with it (`ModelConfig.checked_geometry`), or the run ends in one line naming the field,
before any weight loads. L is the checkpoint's ``max_position_embeddings``, unless the preset
states both: a config may allow more positions than its RoPE was trained at (Qwen2.5-7B's says
131072, its RoPE was trained at 32768), and the preset then gives ``max_position_embeddings``
(checked against the checkpoint) beside L.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from dprope.config import ConfigError
from dprope.rope.config import RopeConfig
from dprope.rope.geometry import PRETRAINING_ROPE_TYPES, RotaryGeometry
from dprope.rope.registry import compute_scaling
from dprope.rope.strategies import RopeScaling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """A model architecture the trainer supports (a transformers ``model_type``)."""

    config_class: str  # the transformers config class a random init builds
    liger: str | None  # Liger-Kernel's entry point for it (liger_kernel.transformers), None: no kernels
    architecture: dict[str, Any] = field(default_factory=dict)  # fixed config values of the family's presets


# model_type -> Family: the one list of supported families (a new one is one line here)
FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaConfig", "apply_liger_kernel_to_llama"),
    "mistral": Family("MistralConfig", "apply_liger_kernel_to_mistral", {"sliding_window": None}),
    "qwen2": Family("Qwen2Config", "apply_liger_kernel_to_qwen2", {"use_sliding_window": False}),
}


@dataclass
class ModelConfig:
    name: str = "tiny"  # display name, used in tables and run names
    pretrained: str | None = (
        None  # hub id or local directory of weights; null = random init from the fields below
    )
    tokenizer: str | None = None  # hub id, local directory, or 'byte' (built in); null = same as pretrained
    family: str = "llama"  # transformers model_type: llama | mistral | qwen2 (random init; checked against a checkpoint)
    head_dim: int = 16  # attention head dimension
    partial_rotary_factor: float = 1.0  # share of head_dim that rotates (rotary dims d = head_dim x this)
    rope_theta: float = 10000.0  # RoPE base
    rope_type: str = "default"  # the model's own pre-training RoPE: default | linear | llama3 | yarn (transformers rope_type)
    rope_scaling: dict[str, Any] = field(
        default_factory=dict
    )  # its parameters beside rope_theta, as in the checkpoint's rope_parameters (llama3: factor, low_freq_factor, ...)
    original_max_position_embeddings: int = 256  # L: the context the pre-training frequencies serve
    max_position_embeddings: int | None = (
        None  # the checkpoint's max_position_embeddings where it exceeds L (Qwen2.5-7B); null = L
    )
    hidden_size: int = 64  # model width (architecture fields: random init and FLOP counts)
    num_hidden_layers: int = 2  # decoder layers
    num_attention_heads: int = 4  # query heads (hidden_size = heads x head_dim for these families)
    num_key_value_heads: int | None = None  # null = num_attention_heads (no GQA)
    intermediate_size: int = 128  # SwiGLU MLP width
    vocab_size: int = 260  # the built-in byte tokenizer's size for the tiny preset
    tie_word_embeddings: bool = False  # share the input embedding with the output head (random init)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                "family", f"unsupported family {self.family!r} (supported: {', '.join(FAMILIES)})"
            )
        _ = self.geometry  # building it checks the rotary numbers (errors name model.<field>)
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")
        stated = self.max_position_embeddings
        if stated is not None and stated < self.original_max_position_embeddings:
            raise ConfigError(
                "max_position_embeddings",
                f"must be at least original_max_position_embeddings = {self.original_max_position_embeddings} "
                f"(got {stated}), or null",
            )
        kv = self.num_key_value_heads
        if kv is not None and (kv <= 0 or self.num_attention_heads % kv):
            raise ConfigError(
                "num_key_value_heads",
                f"must divide num_attention_heads = {self.num_attention_heads} (got {kv})",
            )
        if self.pretrained is None and self.tokenizer is None:
            raise ConfigError(
                "tokenizer", "must be set when pretrained is null (use 'byte' for the built-in one)"
            )

    @property
    def geometry(self) -> RotaryGeometry:
        """The rotary numbers of the preset, which every strategy and analysis start from
        (errors name ``model.<field>``)."""
        return RotaryGeometry(
            self.head_dim,
            self.rope_theta,
            self.original_max_position_embeddings,
            self.partial_rotary_factor,
            self.rope_type,
            self.rope_scaling,
        )

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.pretrained  # type: ignore[return-value]

    def hf_config(self, rope: RopeConfig | None = None):
        """The transformers config of the preset's family for random initialisation, with ``rope``
        applied when given."""
        import transformers

        family = FAMILIES[self.family]
        config_class = getattr(transformers, family.config_class)
        config = config_class(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads or self.num_attention_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings or self.original_max_position_embeddings,
            rope_parameters=self.geometry.native_parameters(),
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            **family.architecture,
        )
        if rope is not None:
            apply_rope(config, rope, self)
        return config

    def scaling(self, rope: RopeConfig) -> RopeScaling:
        """The strategy's result for this preset's geometry; errors name ``rope.<field>`` or
        ``model.<field>``."""
        return compute_scaling(rope, self.geometry)

    def checked_geometry(self, hf_config: Any, source: str | None = None) -> RotaryGeometry:
        """The geometry of a checkpoint's config (`checkpoint_geometry`), after checking that the
        preset states the same family and numbers; a disagreement names its ``model.<field>``."""
        found = checkpoint_geometry(hf_config, source)
        where = f"the checkpoint's ({source})" if source else "the checkpoint's"
        model_type = getattr(hf_config, "model_type", None)
        if model_type != self.family:
            raise ConfigError("model.family", f"{self.family} does not match {where} {model_type}")
        preset = self.geometry
        for key, name in (
            ("head_dim", "head_dim"),
            ("partial_rotary_factor", "partial_rotary_factor"),
            ("rope_theta", "rope_theta"),
            ("rope_type", "rope_type"),
            ("rope_scaling", "rope_scaling"),
        ):
            ours, theirs = getattr(preset, key), getattr(found, key)
            if key == "rope_scaling":  # optional parameters at transformers' defaults on both sides
                ours, theirs = preset.pretraining_parameters, found.pretraining_parameters
            if ours != theirs:
                raise ConfigError(f"model.{name}", f"{ours} does not match {where} {theirs}")
        stated = self.max_position_embeddings or preset.original_length
        if stated != found.original_length:
            key = (
                "max_position_embeddings"
                if self.max_position_embeddings
                else "original_max_position_embeddings"
            )
            raise ConfigError(
                f"model.{key}",
                f"{stated} does not match {where} max_position_embeddings {found.original_length}",
            )
        if preset.original_length < found.original_length:
            log.info(
                "%s: max_position_embeddings %d, RoPE trained at L = %d (model.original_max_position_embeddings): "
                "the strategy extends from %d",
                self.name,
                found.original_length,
                preset.original_length,
                preset.original_length,
            )
            found = replace(found, original_length=preset.original_length)
        if source:
            log.info("%s: rotary geometry from its config: %s", source, found.describe())
        return found


def checkpoint_geometry(hf_config: Any, source: str | None = None) -> RotaryGeometry:
    """The rotary geometry a transformers config describes: head_dim, partial rotary factor, base,
    rope type and parameters, and L = ``max_position_embeddings``.

    One line naming the model and what is supported (``model.pretrained``) when its family is not
    one of `FAMILIES`, it has no rotary embedding, or its rope type does not compose.
    """
    model_type = getattr(hf_config, "model_type", None)
    name = f"{source} ({model_type})" if source else str(model_type)
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    if not params.get("rope_theta"):
        raise ConfigError(
            "model.pretrained",
            f"{name} has no rotary position embedding; supported families: {', '.join(FAMILIES)}",
        )
    if model_type not in FAMILIES:
        raise ConfigError(
            "model.pretrained", f"{name} is not a supported family (supported: {', '.join(FAMILIES)})"
        )
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type not in PRETRAINING_ROPE_TYPES:
        raise ConfigError(
            "model.pretrained",
            f"{name} uses rope type {rope_type!r}, which the strategies cannot compose with "
            f"(supported: {', '.join(PRETRAINING_ROPE_TYPES)})",
        )
    scaling = {
        k: v
        for k, v in params.items()
        if k not in ("rope_type", "type", "rope_theta", "partial_rotary_factor") and v is not None
    }
    if rope_type == "default":
        # transformers standardises every config with these keys; plain RoPE reads none of them
        scaling.pop("original_max_position_embeddings", None)
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    try:
        return RotaryGeometry(
            int(head_dim),
            float(params["rope_theta"]),
            int(hf_config.max_position_embeddings),
            float(
                params.get("partial_rotary_factor")
                or getattr(hf_config, "partial_rotary_factor", None)
                or 1.0
            ),
            rope_type,
            scaling,
        )
    except ConfigError as err:
        raise ConfigError("model.pretrained", f"{name}: {err}") from None


def apply_rope(
    hf_config: Any, rope: RopeConfig, model: ModelConfig, source: str | None = None
) -> RopeScaling:
    """Set a HF config's native ``rope_parameters`` and ``max_position_embeddings`` (= s * L) for
    a strategy; returns the strategy's result.

    The geometry is the config's own (`ModelConfig.checked_geometry`: the preset must agree with
    it), so the exported frequencies are those of the model being extended.
    """
    geometry = model.checked_geometry(hf_config, source)
    scaling = compute_scaling(rope, geometry)
    hf_config.rope_parameters = rope.export(scaling)
    hf_config.max_position_embeddings = scaling.target_length
    return scaling
