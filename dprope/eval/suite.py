"""The evaluation suite: which benchmarks exist, their typed config, and the order of work.

Order, cheapest checks first: the checkpoint's config (not its weights) gives
max_position_embeddings; every selected benchmark then validates its lengths against it and
reads, validates and tokenizes its data (`prepare`); only then are the weights loaded and the
benchmarks run (`run`), so a bad path, length or data file costs seconds, not a model load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dprope.config import ConfigError, check_choice, from_mapping
from dprope.eval.common import BenchmarkResult, EvalContext
from dprope.eval.longbench import LongBenchConfig, needs_model, prepare_longbench, run_longbench
from dprope.eval.open_llm import OpenLLMConfig, prepare_open_llm, run_open_llm
from dprope.eval.passkey import PasskeyConfig, prepare_passkey, run_passkey
from dprope.eval.perplexity import PerplexityConfig, prepare_perplexity, resolve_lengths, run_perplexity
from dprope.eval.ruler import RulerConfig, prepare_ruler, run_ruler
from dprope.rope.rotation import ROPE_PRECISIONS


@dataclass(frozen=True)
class Inputs:
    """What `prepare` may use: the tokenizer, the run context and the `data` preset."""

    tokenizer: Any
    ctx: EvalContext
    data: Any = None  # dprope.data.DataConfig, or None when no data preset was composed


def _perplexity_documents(cfg: PerplexityConfig, inputs: Inputs):
    if inputs.data is None:
        raise ConfigError(
            "data", "perplexity reads its documents through a data preset: choose one with data=<preset>"
        )
    from dprope.data import eval_documents

    lengths, _ = resolve_lengths(cfg, inputs.ctx)  # length errors before any document is read
    min_tokens = max(lengths) if cfg.min_document_tokens is None else cfg.min_document_tokens
    docs = eval_documents(inputs.data, inputs.tokenizer, cfg.split, min_tokens, cfg.max_documents)
    return prepare_perplexity(cfg, docs, inputs.ctx, inputs.tokenizer.bos_token_id)


@dataclass(frozen=True)
class Benchmark:
    config: type  # the dataclass of eval.<name>
    prepare: Callable[[Any, Inputs], Any]  # (its config, inputs) -> prepared data, before the weights load
    run: Callable[
        [Any, Any, Any, Any, EvalContext], BenchmarkResult
    ]  # (model, tokenizer, config, prepared, ctx)
    needs_model: Callable[[Any], bool] = lambda cfg: True  # False: scores saved predictions, no model


BENCHMARKS: dict[str, Benchmark] = {
    "passkey": Benchmark(PasskeyConfig, lambda cfg, i: prepare_passkey(cfg, i.tokenizer, i.ctx), run_passkey),
    "perplexity": Benchmark(
        PerplexityConfig,
        _perplexity_documents,
        lambda m, tok, cfg, docs, ctx: run_perplexity(m, cfg, docs, ctx),
    ),
    "longbench_e": Benchmark(
        LongBenchConfig, lambda cfg, i: prepare_longbench(cfg, i.tokenizer, i.ctx), run_longbench, needs_model
    ),
    "ruler": Benchmark(RulerConfig, lambda cfg, i: prepare_ruler(cfg, i.tokenizer, i.ctx, i.data), run_ruler),
    "open_llm": Benchmark(OpenLLMConfig, lambda cfg, i: prepare_open_llm(cfg, i.ctx), run_open_llm),
}


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["passkey"])  # benchmarks to run, in order
    output_dir: str | None = None  # where results and plots go; null = the Hydra run directory
    device: str | None = None  # cpu | cuda | cuda:N; null = cuda when available, else cpu
    batch_size: int = 1  # sequences per forward pass or generate call
    allow_beyond_max_position: bool = False  # evaluate beyond the checkpoint's max_position_embeddings
    seed: int = 42  # passkeys, RULER content, lm-eval's few-shot sampling
    plots: bool = True  # write PNG plots next to results.json
    progress: bool = True  # tqdm progress bars on stderr
    rope_precision: str = "model"  # model (transformers' rotation) | fp32 (q/k rotated in float32, cast back)
    passkey: PasskeyConfig = field(default_factory=PasskeyConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    longbench_e: LongBenchConfig = field(default_factory=LongBenchConfig)
    ruler: RulerConfig = field(default_factory=RulerConfig)
    open_llm: OpenLLMConfig = field(default_factory=OpenLLMConfig)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", f"must list at least one benchmark ({', '.join(BENCHMARKS)})")
        for i, name in enumerate(self.tasks):
            if name not in BENCHMARKS:
                raise ConfigError(
                    f"tasks[{i}]", f"unknown benchmark {name!r} (available: {', '.join(BENCHMARKS)})"
                )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"lists a benchmark twice ({self.tasks})")
        check_choice(self, "rope_precision", ROPE_PRECISIONS)
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1 (got {self.batch_size})")
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError("device", f"must be cpu, cuda, cuda:N or null (got {self.device!r})")


def eval_config(mapping: Mapping[str, Any] | None) -> EvalConfig:
    """`EvalConfig` from a plain mapping (``OmegaConf.to_container(cfg.eval)``); errors name ``eval.<field>``."""
    return from_mapping(EvalConfig, mapping, prefix="eval")


@dataclass
class EvalReport:
    """Everything `results.json` holds: the model, the settings, and each benchmark's result."""

    model: dict[str, Any]
    settings: dict[str, Any]
    benchmarks: dict[str, BenchmarkResult] = field(default_factory=dict)


def run_suite(
    model_cfg,
    settings: EvalConfig,
    data_cfg=None,
    on_result: Callable[[EvalReport], None] | None = None,
    rope=None,
) -> EvalReport:
    """Run ``settings.tasks`` on ``model_cfg.pretrained``; ``on_result`` sees the report after each benchmark.

    ``rope`` (a `RopeConfig`) applies that strategy to the checkpoint at load time, without
    fine-tuning (`dprope.eval.loading.apply_strategy`).
    """
    import torch

    from dprope.eval.loading import (
        attention_implementation,
        load_eval_tokenizer,
        load_model,
        resolve_checkpoint,
        resolve_device,
    )

    if not any(BENCHMARKS[n].needs_model(getattr(settings, n)) for n in settings.tasks):
        return _rescore(model_cfg, settings, on_result)
    checkpoint = resolve_checkpoint(model_cfg, rope)
    tokenizer = load_eval_tokenizer(checkpoint)
    ctx = EvalContext(
        checkpoint.max_positions,
        settings.allow_beyond_max_position,
        settings.batch_size,
        settings.seed,
        settings.progress,
        checkpoint.original_length,
    )
    inputs = Inputs(tokenizer, ctx, data_cfg)
    prepared = {name: BENCHMARKS[name].prepare(getattr(settings, name), inputs) for name in settings.tasks}

    device = resolve_device(settings.device)
    model = load_model(checkpoint, device, settings.rope_precision)
    report = EvalReport(
        model={
            "name": checkpoint.name,
            "pretrained": checkpoint.source,
            "tokenizer": checkpoint.tokenizer,
            "max_position_embeddings": checkpoint.max_positions,
            "rope_parameters": _plain(getattr(checkpoint.hf_config, "rope_parameters", None)),
            "strategy": checkpoint.strategy,
            "device": device,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "attn_implementation": attention_implementation(device),
        },
        settings=asdict(settings),
    )
    torch.manual_seed(settings.seed)
    for name in settings.tasks:
        benchmark = BENCHMARKS[name]
        report.benchmarks[name] = benchmark.run(
            model, tokenizer, getattr(settings, name), prepared.pop(name), ctx
        )
        if on_result is not None:
            on_result(report)
    return report


def _rescore(model_cfg, settings: EvalConfig, on_result) -> EvalReport:
    """Every selected benchmark scores saved predictions: no checkpoint, tokenizer or model."""
    prepared = {
        name: BENCHMARKS[name].prepare(getattr(settings, name), Inputs(None, None)) for name in settings.tasks
    }
    report = EvalReport(
        model={
            "name": model_cfg.name,
            "pretrained": None,
            "tokenizer": None,
            "max_position_embeddings": None,
            "device": None,
            "dtype": None,
            "attn_implementation": None,
            "rescored": True,
        },
        settings=asdict(settings),
    )
    for name in settings.tasks:
        report.benchmarks[name] = BENCHMARKS[name].run(
            None, None, getattr(settings, name), prepared.pop(name), None
        )
        if on_result is not None:
            on_result(report)
    return report


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a config value (rope_parameters may hold tensors or tuples)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
