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
from dprope.eval.backends import Backends
from dprope.eval.benchmark import Benchmark, Inputs
from dprope.eval.benchmarks import BENCHMARKS
from dprope.eval.common import BenchmarkResult, EvalContext
from dprope.rope.rotation import ROPE_PRECISIONS


@dataclass
class RunSettings:
    """The run-wide part of ``eval``; `EvalConfig` adds one section per registered benchmark."""

    tasks: list[str] = field(default_factory=lambda: ["passkey"])  # benchmarks to run, in order
    output_dir: str | None = None  # where results and plots go; null = the Hydra run directory
    device: str | None = None  # cpu | cuda | cuda:N; null = cuda when available, else cpu
    batch_size: int = 1  # sequences per forward pass or generate call
    allow_beyond_max_position: bool = False  # evaluate beyond the checkpoint's max_position_embeddings
    seed: int = 42  # passkeys, RULER content, lm-eval's few-shot sampling
    plots: bool = True  # write PNG plots next to results.json
    progress: bool = True  # tqdm progress bars on stderr
    rope_precision: str = "model"  # model (transformers' rotation) | fp32 (q/k rotated in float32, cast back)
    chat_template: bool = (
        False  # wrap every benchmark's prompt in the tokenizer's chat template (chat models)
    )

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

    def selected(self) -> list[tuple[Benchmark, Any]]:
        """The benchmarks of ``tasks``, in order, each with its config section."""
        return [(BENCHMARKS[name], getattr(self, name)) for name in self.tasks]

    def reads_data(self) -> bool:
        """Whether a selected benchmark reads the `data` preset."""
        return any(benchmark.reads_data(cfg) for benchmark, cfg in self.selected())


def _benchmark_sections(cls: type) -> type:
    """Add ``<name>: <its config>`` (default: the config's defaults) for each registered benchmark,
    in the registry's order, so that a new benchmark needs no line here."""
    annotations = dict(cls.__dict__.get("__annotations__", {}))
    for name, benchmark in BENCHMARKS.items():
        annotations[name] = benchmark.config
        setattr(cls, name, field(default_factory=benchmark.config))
    cls.__annotations__ = annotations
    return cls


@dataclass
@_benchmark_sections
class EvalConfig(RunSettings):
    """The `eval` config: the run-wide settings (`RunSettings`), then ``eval.<name>`` for each
    registered benchmark, typed by its config (``dprope/eval/benchmarks/<name>/config.py``, where
    each key is documented)."""


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
    backends: Backends | None = None,
) -> EvalReport:
    """Run ``settings.tasks`` on ``model_cfg.pretrained``; ``on_result`` sees the report after each benchmark.

    ``rope`` (a `RopeConfig`) applies that strategy to the checkpoint at load time, without
    fine-tuning (`dprope.eval.loading.apply_strategy`). ``backends`` replaces how the loaded
    model is queried (`dprope.eval.backends`; default: greedy generation and lm-eval's HFLM).
    """
    import torch

    from dprope.eval.loading import (
        attention_implementation,
        load_eval_tokenizer,
        load_model,
        resolve_checkpoint,
        resolve_device,
    )

    selected = settings.selected()
    if not any(benchmark.needs_model(cfg) for benchmark, cfg in selected):
        return _rescore(model_cfg, settings, on_result)
    from dprope.eval.chat import check_chat_template, template_sha256

    checkpoint = resolve_checkpoint(model_cfg, rope)
    tokenizer = load_eval_tokenizer(checkpoint)
    check_chat_template(tokenizer, settings.chat_template, checkpoint.name)
    ctx = EvalContext(
        max_positions=checkpoint.max_positions,
        allow_beyond_max_position=settings.allow_beyond_max_position,
        batch_size=settings.batch_size,
        seed=settings.seed,
        progress=settings.progress,
        original_length=checkpoint.original_length,
        backends=backends or Backends(),
        chat_template=settings.chat_template,
    )
    inputs = Inputs(tokenizer, ctx, data_cfg)
    prepared = {benchmark.name: benchmark.prepare(cfg, inputs) for benchmark, cfg in selected}

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
            "chat_template_sha256": template_sha256(tokenizer) if settings.chat_template else None,
        },
        settings=asdict(settings),
    )
    torch.manual_seed(settings.seed)
    for benchmark, cfg in selected:  # each benchmark's prepared data is freed once it has run
        report.benchmarks[benchmark.name] = benchmark.run(
            model, tokenizer, cfg, prepared.pop(benchmark.name), ctx
        )
        if on_result is not None:
            on_result(report)
    return report


def _rescore(model_cfg, settings: EvalConfig, on_result) -> EvalReport:
    """Every selected benchmark scores saved predictions: no checkpoint, tokenizer or model.

    The model preset plays no part, so the report names the predictions instead
    (`predictions_name`) and lists where each benchmark's predictions came from."""
    selected = settings.selected()
    prepared = {benchmark.name: benchmark.prepare(cfg, Inputs(None, None)) for benchmark, cfg in selected}
    sources = {benchmark.name: getattr(cfg, "predictions_dir", None) for benchmark, cfg in selected}
    report = EvalReport(
        model={
            "name": predictions_name(next(d for d in sources.values() if d)),
            "pretrained": None,
            "tokenizer": None,
            "max_position_embeddings": None,
            "device": None,
            "dtype": None,
            "attn_implementation": None,
            "rescored": True,
            "predictions": sources,
        },
        settings=asdict(settings),
    )
    for benchmark, cfg in selected:
        report.benchmarks[benchmark.name] = benchmark.run(None, None, cfg, prepared.pop(benchmark.name), None)
        if on_result is not None:
            on_result(report)
    return report


def predictions_name(directory: str) -> str:
    """What re-scored predictions are called: their directory's name (the official layout is
    ``pred_e/<model>/<dataset>.jsonl``), or, for an evaluation run's own ``<run>/<benchmark>/``
    folder, the model that run recorded in its results.json."""
    import json
    from pathlib import Path

    path = Path(directory).expanduser().resolve()
    if path.name in BENCHMARKS:
        try:
            return str(json.loads((path.parent / "results.json").read_text())["model"]["name"])
        except (OSError, ValueError, KeyError, TypeError):
            return path.parent.name
    return path.name


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a config value (rope_parameters may hold tensors or tuples)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
