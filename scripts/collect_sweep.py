"""Collect the runs of a sweep into one table and one plot.

    python scripts/collect_sweep.py outputs/sweep/train/llama2-7b_s2.0_interpolated_dims
    python scripts/collect_sweep.py outputs/sweep/analyze/llama2-7b_s2.0_num_intervals --output report/

A run is any directory under the sweep directory holding `config.yaml` (a training run) or
`.hydra/config.yaml` (an analysis run of `launch/analyze.py -m`). From each run: the swept values
(the config keys whose values differ between runs), the steps done and the final loss
(`metrics.jsonl`), the strategy's total disturbance (`rope.json`, or `analysis.json`) and whether
the run finished (its export `hf/`). Writes sweep.md, sweep.csv and sweep.png to the sweep
directory (or --output) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from dprope.cli import fail
from dprope.eval.common import markdown_table

IGNORED_SUFFIXES = ("output_dir", "cache_dir", "cache_path", "run_name")  # differ per run by design


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, list) else tree}


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return records


def read_run(run_dir: Path) -> dict[str, Any]:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        config_file = run_dir / ".hydra" / "config.yaml"
    config = flatten(
        {k: v for k, v in (yaml.safe_load(config_file.read_text()) or {}).items() if k != "hydra"}
    )
    metrics = read_metrics(run_dir / "metrics.jsonl")
    disturbance = None
    if (run_dir / "rope.json").is_file():
        disturbance = json.loads((run_dir / "rope.json").read_text())["disturbance"]
    elif (run_dir / "analysis.json").is_file():
        analysis = json.loads((run_dir / "analysis.json").read_text())
        disturbance = analysis["strategies"][analysis["selected"]]["disturbance"]
    kind = "train" if (run_dir / "config.yaml").is_file() else "analyze"
    return {
        "run": run_dir.name,
        "config": config,
        "steps": metrics[-1]["step"] if metrics else 0,
        "total_steps": config.get("trainer.steps"),
        "final_loss": metrics[-1]["loss"] if metrics else None,
        "disturbance": disturbance,
        "done": (run_dir / "hf").is_dir() if kind == "train" else disturbance is not None,
    }


def find_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    run_dirs = sorted(
        {p.parent.parent if p.parent.name == ".hydra" else p.parent for p in sweep_dir.glob("**/config.yaml")}
        - {sweep_dir}
    )
    return [read_run(d) for d in run_dirs if ".submitit" not in d.parts]


def swept_keys(runs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for run in runs for k in run["config"]})
    return [
        k
        for k in keys
        if not k.endswith(IGNORED_SUFFIXES) and len({repr(run["config"].get(k)) for run in runs}) > 1
    ]


def sort_key(value: Any) -> tuple:
    return (
        (0, value, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else (1, 0, str(value))
    )


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def table(runs: list[dict[str, Any]], keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    header = ["run", *keys, "steps", "final loss", "disturbance", "done"]
    rows = []
    for run in runs:
        steps = f"{run['steps']}/{run['total_steps']}" if run["total_steps"] else "-"
        values = [run["config"].get(k) for k in keys]
        rows.append([run["run"], *values, steps, run["final_loss"], run["disturbance"], run["done"]])
    return header, rows


def plot(runs: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """Final loss and disturbance against the first swept key, one line per value of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = keys[0] if keys else "run"
    metrics = [
        (metric, label)
        for metric, label in (("final_loss", "final loss"), ("disturbance", "disturbance"))
        if any(run[metric] is not None for run in runs)
    ]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.6), squeeze=False)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        label = ", ".join(f"{k}={fmt(run['config'].get(k))}" for k in keys[1:])
        groups.setdefault(label, []).append(run)
    for ax, (metric, label) in zip(axes[0], metrics, strict=True):
        for group, members in groups.items():
            points = [
                (run["config"].get(x_key, run["run"]), run[metric])
                for run in members
                if run[metric] is not None
            ]
            points.sort(key=lambda p: sort_key(p[0]))
            if points:
                xs = [str(p[0]) if not isinstance(p[0], (int, float)) else p[0] for p in points]
                ax.plot(xs, [p[1] for p in points], marker="o", label=group or None)
                if all(isinstance(x, (int, float)) for x in xs):
                    ax.set_xticks(xs)
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if any(groups):
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (hydra.sweep.dir)")
    parser.add_argument(
        "--output", type=Path, help="where sweep.md, sweep.csv, sweep.png go (default: sweep_dir)"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        fail(f"sweep_dir: no directory at {args.sweep_dir}")
    runs = find_runs(args.sweep_dir)
    if not runs:
        fail(f"sweep_dir: no run (config.yaml) under {args.sweep_dir}")
    keys = swept_keys(runs)
    runs.sort(key=lambda run: [sort_key(run["config"].get(k)) for k in keys] + [sort_key(run["run"])])
    header, rows = table(runs, keys)
    output = args.output or args.sweep_dir
    output.mkdir(parents=True, exist_ok=True)
    text = markdown_table(header, [[fmt(v) for v in row] for row in rows])
    (output / "sweep.md").write_text(text + "\n")
    with open(output / "sweep.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    plot(runs, keys, output / "sweep.png")
    print(text)
    print(f"\nwrote: {output / 'sweep.md'}, {output / 'sweep.csv'}, {output / 'sweep.png'}")


if __name__ == "__main__":
    main()
