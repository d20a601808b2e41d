"""What every benchmark shares: the run context, the result record, the length rule, tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dprope.config import ConfigError
from dprope.eval.backends import Backends


@dataclass
class EvalContext:
    """Run-wide settings a benchmark needs besides its own config."""

    max_positions: int  # the checkpoint's config.max_position_embeddings
    allow_beyond_max_position: bool = False  # evaluate inputs longer than max_positions anyway
    batch_size: int = 1  # sequences per forward pass / generate call
    seed: int = 42  # seed of every random choice (keys, needles, words)
    progress: bool = True  # tqdm progress bars on stderr
    original_length: int | None = None  # the pre-training context L the checkpoint's RoPE scaling starts from
    backends: Backends = field(default_factory=Backends)  # how the model is queried (generation, lm-eval)
    chat_template: bool = False  # prompts wrapped in the tokenizer's chat template (dprope.eval.chat)


@dataclass
class BenchmarkResult:
    """One benchmark's outcome for one model.

    ``summary`` is the model's row in a comparison table (column -> score), ``details`` holds the
    benchmark's own breakdown (JSON-serialisable), ``samples`` the per-example records written to
    ``predictions/<name>.jsonl``, ``markdown`` the tables for ``results.md``, and ``files`` any
    further file of the benchmark (path relative to the output directory -> text).
    """

    name: str
    summary: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    markdown: str = ""
    files: dict[str, str] = field(default_factory=dict)


def check_length(field_name: str, length: int, ctx: EvalContext) -> None:
    """Refuse an input of ``length`` positions beyond the checkpoint's max_position_embeddings,
    unless ``eval.allow_beyond_max_position`` is set (the baseline rows of the paper's tables)."""
    if length > ctx.max_positions and not ctx.allow_beyond_max_position:
        raise ConfigError(
            field_name,
            f"{length} exceeds the checkpoint's max_position_embeddings ({ctx.max_positions}); "
            "set eval.allow_beyond_max_position=true to evaluate beyond it",
        )


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def format_number(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub-flavoured markdown table; floats rounded to ``digits``, NaN shown as n/a."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(format_number(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)
