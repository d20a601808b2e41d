"""The finished stages' records gathered by setting, strategy and seed, and the measurements the
report tabulates and compares.

Values stay keyed by seed, so a comparison pairs the two strategies' results of the same seed
(the same pre-trained model), whatever stages of other seeds are missing.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.reproduce.config import Reproduction

SETTINGS = (("free", "training-free"), ("tuned", "fine-tuned"))


@dataclass(frozen=True)
class Measurement:
    """One number a measuring stage records per seed, and how to read it."""

    key: tuple[str, ...]  # path into the stage's summary: ("perplexity", "512"), ("beyond_L",)
    label: str
    lower_is_better: bool
    scale: float = 1.0  # shown times this (100: accuracy in percentage points)
    digits: int = 2


def measurements(repro: Reproduction) -> list[Measurement]:
    """Perplexity and retrieval accuracy at L, 2L, s x L, then the mean loss within and beyond L."""
    lengths = [str(n) for n in repro.lengths]
    return [
        *[Measurement(("perplexity", n), f"PPL @ {n}", True) for n in lengths],
        *[Measurement(("retrieval", n), f"retrieval @ {n} (%)", False, 100.0, 1) for n in lengths],
        Measurement(("within_L",), f"loss < {repro.length}", True, 1.0, 3),
        Measurement(("beyond_L",), f"loss >= {repro.length}", True, 1.0, 3),
    ]


def value(record: dict[str, Any], key: tuple[str, ...]) -> float:
    for part in key:
        record = record[part]
    return float(record)  # type: ignore[arg-type]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    if not values:
        return float("nan"), None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_cell(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    if not values:
        return "-"
    mean, std = mean_std([v * scale for v in values])
    if not math.isfinite(mean):
        return f"{mean}"
    text = f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def label(strategy: str, attention: str) -> str:
    """A fine-tuning's name: the strategy, with the attention mode when it is not causal."""
    return strategy if attention == "causal" else f"{strategy}-{attention}"


def collect(repro: Reproduction, root: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything the report and the figures read, from the ``DONE`` records of ``records``."""
    cfg = repro.reproduce
    tuned = [*cfg.finetune.strategies]
    tuned += [label(s, m) for s in cfg.attention.strategies for m in cfg.attention.modes]
    results: dict[str, Any] = {"free": {}, "tuned": {}, "training": {}, "precision": {}, "pretrain": {}}
    for kind, names in (("free", cfg.measure.training_free), ("tuned", tuned)):
        for name in names:
            entry: dict[str, Any] = {"by_seed": {}, "curves": []}
            for seed in cfg.seeds:
                record = records.get(f"seed{seed}/{kind}/{name}")
                if not record:
                    continue
                summary = record["summary"]
                entry["by_seed"][seed] = {
                    "perplexity": summary["perplexity"],
                    "retrieval": summary["retrieval"],
                    "grid": summary["retrieval_grid"],
                    "within_L": summary["mean_loss"]["within_L"],
                    "beyond_L": summary["mean_loss"]["beyond_L"],
                }
                metrics = json.loads((root / f"seed{seed}/{kind}/{name}/metrics.json").read_text())
                entry["curves"].append(metrics["loss_by_position"])
            results[kind][name] = entry
    for name in ["pretrain", *tuned]:
        runs = {}
        for seed in cfg.seeds:
            stage = f"seed{seed}/pretrain" if name == "pretrain" else f"seed{seed}/finetune/{name}"
            record = records.get(stage)
            if record:
                summary = record["summary"]
                runs[seed] = {
                    "wall_s": record["elapsed_s"],
                    "step_s": summary.get("step_seconds"),
                    "final_loss": summary["final_loss"],
                    "tokens": summary["tokens"],
                }
        results["training"][name] = runs
    for seed in cfg.seeds:
        record = records.get(f"seed{seed}/precision")
        if record:
            results["precision"][seed] = record["summary"]
    results["pretrain"] = {
        seed: run["final_loss"] for seed, run in results["training"].get("pretrain", {}).items()
    }
    corpus = records.get("corpus")
    results["corpus"] = corpus["summary"] if corpus else None
    analysis = records.get("analysis")
    results["disturbance"] = analysis["summary"]["disturbance"] if analysis else {}
    results["scaled_dims"] = analysis["summary"]["scaled_dims"] if analysis else {}
    return results


def seed_values(entry: dict[str, Any], key: tuple[str, ...]) -> list[float]:
    """One value per finished seed, in seed order."""
    return [value(record, key) for record in entry["by_seed"].values()]


def paired_values(
    a: dict[str, Any], b: dict[str, Any], key: tuple[str, ...]
) -> tuple[list[float], list[float]]:
    """The values of the seeds both entries finished, in the same order."""
    seeds = [s for s in a["by_seed"] if s in b["by_seed"]]
    return [value(a["by_seed"][s], key) for s in seeds], [value(b["by_seed"][s], key) for s in seeds]


def mean_grid(entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The retrieval grid averaged over seeds: ``{length: {depth: accuracy}}``."""
    grids = [record["grid"] for record in entry["by_seed"].values()]
    if not grids:
        return {}
    return {n: {d: statistics.fmean(g[n][d] for g in grids) for d in grids[0][n]} for n in grids[0]}
