"""Files of an evaluation run: ``results.json`` (everything), ``results.md`` (the tables),
``predictions/<benchmark>.jsonl`` (one record per example), the figures, and the wandb summary."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from dprope.eval.benchmarks import BENCHMARKS
from dprope.eval.common import markdown_table
from dprope.eval.suite import EvalReport


def _finite(value: Any) -> Any:
    """NaN and infinities become null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def report_dict(report: EvalReport) -> dict[str, Any]:
    return _finite(
        {
            "model": report.model,
            "eval": report.settings,
            "benchmarks": {
                name: {"summary": r.summary, "details": r.details} for name, r in report.benchmarks.items()
            },
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )


def report_markdown(report: EvalReport) -> str:
    model = report.model
    if model.get("rescored"):  # no model ran: the header names the predictions scored
        lines = [
            f"# Re-scored predictions: {model['name']}",
            "",
            markdown_table(["benchmark", "predictions"], [[b, d] for b, d in model["predictions"].items()]),
        ]
    else:
        lines = [
            f"# Evaluation: {model['name']}",
            "",
            markdown_table(
                ["pretrained", "max_position_embeddings", "device", "dtype", "attention"],
                [
                    [
                        model["pretrained"],
                        model["max_position_embeddings"],
                        model["device"],
                        model["dtype"],
                        model["attn_implementation"],
                    ]
                ],
            ),
        ]
    for name, result in report.benchmarks.items():
        lines += ["", f"## {BENCHMARKS[name].display.title}", "", result.markdown]
    return "\n".join(lines) + "\n"


def write_results(report: EvalReport, output_dir: Path) -> list[Path]:
    """Write results.json, results.md and the predictions; returns the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / "results.json", output_dir / "results.md"]
    paths[0].write_text(json.dumps(report_dict(report), indent=2) + "\n")
    paths[1].write_text(report_markdown(report))
    for name, result in report.benchmarks.items():
        if result.samples:
            path = output_dir / "predictions" / f"{name}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps(_finite(s)) + "\n" for s in result.samples))
            paths.append(path)
        for relative, text in result.files.items():
            path = output_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            paths.append(path)
    return paths


def write_figures(report: EvalReport, model_name: str, output_dir: Path) -> list[Path]:
    """Each benchmark's figures (`dprope.eval.benchmark.Benchmark.plot`), labelled ``model_name``."""
    return [
        path
        for name, result in report.benchmarks.items()
        for path in BENCHMARKS[name].plot(result, model_name, output_dir)
    ]


def flat_scores(report: EvalReport) -> dict[str, float]:
    """``<benchmark>/<column>`` -> score, the scalars logged to wandb."""
    return {
        f"{name}/{column}": value
        for name, result in report.benchmarks.items()
        for column, value in result.summary.items()
        if isinstance(value, (int, float)) and math.isfinite(value)
    }


def log_to_wandb(logger, run_dir: Path, report: EvalReport, figures: list[Path]) -> None:
    """One wandb run per evaluation: the settings as its config, the scores in its summary and
    the figures as images. ``logger`` is the `logger` group's `LoggerConfig`; the mode follows
    `dprope.tracking.wandb_mode` (offline without an API key, never a login prompt)."""
    import wandb

    from dprope.tracking import wandb_mode

    run = wandb.init(
        project=logger.project,
        entity=logger.entity,
        name=logger.run_name or f"eval-{report.model['name']}",
        tags=list(logger.tags),
        config={"model": report.model, "eval": report.settings},
        dir=str(run_dir),
        mode=wandb_mode(logger),
        job_type="eval",
    )
    run.summary.update(flat_scores(report))
    if figures:
        run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in figures})
    run.finish()
