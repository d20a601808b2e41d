"""Stage f: `report.md` and `results.json` from the finished stages' records, plus the figures.

Tables take the paper's shape: one row per strategy, perplexity by evaluation length, training-
free (the paper's Table 10) and fine-tuned; each cell is the mean over seeds with the sample
standard deviation (n - 1) when more than one seed finished.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from dprope.reproduce.config import Reproduction
from dprope.reproduce.stages import _write_json


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    if not values:
        return float("nan"), None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return f"{mean}"
    text = f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def collect(repro: Reproduction, root: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-strategy values across seeds: perplexity by length, mean losses, loss-by-position curves."""
    results: dict[str, Any] = {"free": {}, "tuned": {}, "pretrain": {}}
    for kind, strategies in (
        ("free", repro.reproduce.measure.training_free),
        ("tuned", repro.reproduce.finetune.strategies),
    ):
        for name in strategies:
            entry = {
                "perplexity": {str(n): [] for n in repro.lengths},
                "beyond_L": [],
                "within_L": [],
                "curves": [],
            }
            for seed in repro.reproduce.seeds:
                stage = f"seed{seed}/{kind}/{name}"
                if stage not in records:
                    continue
                summary = records[stage]["summary"]
                for n, value in summary["perplexity"].items():
                    entry["perplexity"][n].append(value)
                entry["beyond_L"].append(summary["mean_loss"]["beyond_L"])
                entry["within_L"].append(summary["mean_loss"]["within_L"])
                metrics = json.loads((root / stage / "metrics.json").read_text())
                entry["curves"].append(metrics["loss_by_position"])
            entry["seeds"] = len(entry["curves"])
            results[kind][name] = entry
    for seed in repro.reproduce.seeds:
        record = records.get(f"seed{seed}/pretrain")
        if record:
            results["pretrain"][str(seed)] = record["summary"]["final_loss"]
    analysis = records.get("analysis")
    results["disturbance"] = analysis["summary"]["disturbance"] if analysis else {}
    results["scaled_dims"] = analysis["summary"]["scaled_dims"] if analysis else {}
    return results


def _table(repro: Reproduction, entries: dict[str, Any], disturbance: dict[str, float]) -> str:
    lengths = [str(n) for n in repro.lengths]
    header = [
        "strategy",
        "disturbance",
        *[f"PPL @ {n}" for n in lengths],
        f"loss < {repro.length}",
        f"loss >= {repro.length}",
        "seeds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, entry in entries.items():
        dist = disturbance.get(name)
        cells = [
            name,
            "-" if dist is None else f"{dist:.3f}",
            *[format_cell(entry["perplexity"][n]) for n in lengths],
            format_cell(entry["within_L"], 3),
            format_cell(entry["beyond_L"], 3),
            str(entry["seeds"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _times(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for name, record in records.items():
        group = "analysis" if name == "analysis" else name.split("/")[1]
        groups[group] = groups.get(group, 0.0) + record["elapsed_s"]
    return groups


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (tokenizer workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def render(
    repro: Reproduction,
    results: dict[str, Any],
    records: dict,
    wall_s: float,
    num_stages: int,
    cpu_s: float | None = None,
) -> str:
    cfg, model = repro.reproduce, repro.model
    pre, ft = cfg.pretrain, cfg.finetune
    pre_tokens = pre.steps * pre.global_batch_size * repro.length
    ft_tokens = repro.finetune_steps * ft.global_batch_size * repro.target_length
    times = _times(records)
    labels = {
        "analysis": "b. disturbance table",
        "pretrain": "a. pre-training",
        "free": "c. training-free measurements",
        "finetune": "d. fine-tuning",
        "tuned": "d. fine-tuned measurements",
    }
    status = (
        "complete" if len(records) == num_stages else f"partial: {len(records)} of {num_stages} stages done"
    )
    out = [
        "# Small-scale reproduction: training-free and fine-tuned context extension",
        "",
        f"Status: {status}.",
        "",
        "## Settings",
        "",
        f"- model: Llama-family `{model.name}` from scratch, {model.num_hidden_layers} layers, hidden "
        f"{model.hidden_size}, {model.num_attention_heads} heads of dimension {model.head_dim}, "
        f"RoPE base {model.rope_theta:g}, vocabulary {model.vocab_size} (tokenizer `{model.tokenizer_name}`)",
        f"- corpus: `{repro.data.name}` (training split `{repro.data.train_split}`, measured on "
        f"`{cfg.measure.split}`)",
        f"- L = {repro.length}, s = {cfg.factor:g}, s x L = {repro.target_length}",
        f"- a. pre-training: {pre.steps} steps x {pre.global_batch_size} sequences x {repro.length} tokens = "
        f"{pre_tokens:,} tokens, lr {pre.lr:g} after {pre.warmup_steps} warmup steps; final loss per seed: "
        + ", ".join(f"{v:.3f}" for v in results["pretrain"].values() if v is not None),
        f"- d. fine-tuning, each strategy: {repro.finetune_steps} steps x {ft.global_batch_size} sequences x "
        f"{repro.target_length} tokens = {ft_tokens:,} tokens (budget {ft.tokens:,}), lr {ft.lr:g} constant",
        f"- seeds: {', '.join(map(str, cfg.seeds))} (each pre-trains its own model from its own random init; data order fixed)",
        f"- measurements: sliding-window perplexity (stride {repro.stride}) at {', '.join(map(str, repro.lengths))} "
        f"over {cfg.measure.documents} documents of at least {repro.target_length} tokens, cut to "
        f"{repro.document_tokens}; loss by position over each document's first {repro.target_length} tokens",
        f"- disturbance: 1000 x mean over pairs of KL(P_pretrain || P_extended), B = {cfg.num_intervals}; "
        "DPRoPE "
        + (
            f"k = {cfg.num_interpolated_dims}"
            if cfg.num_interpolated_dims is not None
            else "per-pair argmin (t = 0)"
        ),
        "",
        "Cells: mean ± sample standard deviation over the seeds that finished.",
        "",
        "## Training-free (the paper's Table 10 at small scale)",
        "",
        _table(repro, results["free"], results["disturbance"]),
        "",
        f"## Fine-tuned at s x L = {repro.target_length} for {ft_tokens:,} tokens",
        "",
        _table(repro, results["tuned"], results["disturbance"]),
        "",
        "## Wall time",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {labels.get(k, k)} | {v:.0f} |" for k, v in times.items()],
        f"| all stages (sum of their last runs) | {sum(times.values()):.0f} |",
        f"| this invocation (skipped stages cost nothing) | {wall_s:.0f} |",
        *([f"| this invocation, CPU time (user + system) | {cpu_s:.0f} |"] if cpu_s is not None else []),
        "",
        "Figures: `ppl_by_length.png`, `loss_by_position.png` (L marked), `disturbance_vs_perplexity.png`; "
        "the disturbance table in full: `analysis/table.txt`.",
        "",
    ]
    return "\n".join(out)


def write_report(
    repro: Reproduction, root: Path, records: dict[str, dict[str, Any]], wall_s: float, num_stages: int
) -> Path:
    from dprope.reproduce.plots import write_figures

    root.mkdir(parents=True, exist_ok=True)
    results = collect(repro, root, records)
    write_figures(repro, results, root)
    plain = {
        kind: {n: {k: v for k, v in e.items() if k != "curves"} for n, e in results[kind].items()}
        for kind in ("free", "tuned")
    }
    _write_json(
        root / "results.json",
        {
            **plain,
            "pretrain_final_loss": results["pretrain"],
            "disturbance": results["disturbance"],
            "lengths": repro.lengths,
            "stage_seconds": {name: r["elapsed_s"] for name, r in records.items()},
            "wall_s": wall_s,
            "cpu_s": cpu_seconds(),
        },
    )
    path = root / "report.md"
    path.write_text(render(repro, results, records, wall_s, num_stages, cpu_seconds()))
    return path
