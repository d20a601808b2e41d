"""Several evaluated models side by side (e.g. PI, YaRN and DPRoPE at 16k), from the
``results.json`` of each run: one headline table across runs and benchmarks (each benchmark's
headline numbers, `dprope.eval.benchmark.Benchmark.headline_of`; an empty cell where a run lacks
the benchmark or the number), written as Markdown and CSV, then one table and one plot per
benchmark (a benchmark missing from a run is a missing row, a column missing from a row is n/a)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dprope.config import ConfigError
from dprope.eval.benchmark import Display, default_headline
from dprope.eval.benchmarks import BENCHMARKS
from dprope.eval.common import format_number, markdown_table
from dprope.eval.plots import plot_summaries


def display_of(benchmark: str) -> Display:
    """How a benchmark is shown: its own `Display`, or plain defaults for a name not registered
    here (a results.json written by another version)."""
    return BENCHMARKS[benchmark].display if benchmark in BENCHMARKS else Display(benchmark)


def load_run(path: str, field: str = "runs") -> dict[str, Any]:
    """A run's results: ``path`` is its directory or its results.json."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "results.json"
    if not file.is_file():
        raise ConfigError(field, f"no results.json at {path}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(field, f"{file} is not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
        raise ConfigError(field, f"{file} has no 'benchmarks' (not an evaluation result)")
    return data


def labels_for(
    runs: Sequence[dict[str, Any]], paths: Sequence[str], names: Sequence[str] | None
) -> list[str]:
    """``names`` if given, else each model's name, made unique with the run directory's name."""
    if names:
        if len(names) != len(runs):
            raise ConfigError("names", f"gives {len(names)} names for {len(runs)} runs")
        return list(names)
    labels = [str(r.get("model", {}).get("name", Path(p).name)) for r, p in zip(runs, paths, strict=True)]
    return [
        f"{label} ({Path(p).expanduser().resolve().name})" if labels.count(label) > 1 else label
        for label, p in zip(labels, paths, strict=True)
    ]


def comparison_tables(
    runs: Sequence[dict[str, Any]], labels: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """benchmark -> model label -> summary row, benchmarks in first-seen order."""
    tables: dict[str, dict[str, dict[str, float]]] = {}
    for run, label in zip(runs, labels, strict=True):
        for benchmark, result in run["benchmarks"].items():
            tables.setdefault(benchmark, {})[label] = result.get("summary", {})
    return tables


def headline_of(benchmark: str, result: dict[str, Any]) -> dict[str, Any]:
    """A benchmark's headline columns in one run (plain defaults for a name not registered here)."""
    if benchmark in BENCHMARKS:
        return BENCHMARKS[benchmark].headline_of(result)
    return default_headline(benchmark, result)


def headline_rows(
    runs: Sequence[dict[str, Any]], labels: Sequence[str]
) -> tuple[list[tuple[str, str]], dict[str, dict[str, Any]]]:
    """(columns as (benchmark, column), model label -> column -> value). Columns follow the
    registry's order of benchmarks (then any other, first seen), each benchmark's own order."""
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    seen = list(dict.fromkeys(b for run in runs for b in run["benchmarks"]))
    benchmarks = sorted(seen, key=lambda b: (order.get(b, len(order)), seen.index(b)))
    columns: list[tuple[str, str]] = []
    rows: dict[str, dict[str, Any]] = {label: {} for label in labels}
    for benchmark in benchmarks:
        for run, label in zip(runs, labels, strict=True):
            if benchmark not in run["benchmarks"]:
                continue
            for column, value in headline_of(benchmark, run["benchmarks"][benchmark]).items():
                if (benchmark, column) not in columns:
                    columns.append((benchmark, column))
                rows[label][column] = value
    return columns, rows


def _cell(value: Any, digits: int) -> str:
    """A headline cell: empty when missing (or NaN), else the number with the benchmark's digits."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return format_number(
        float(value) if isinstance(value, int) and not isinstance(value, bool) else value, digits
    )


def headline_markdown(columns: list[tuple[str, str]], rows: dict[str, dict[str, Any]]) -> str:
    body = [
        [label, *(_cell(row.get(c), display_of(b).digits) for b, c in columns)] for label, row in rows.items()
    ]
    return markdown_table(["model", *(c for _, c in columns)], body)


def headline_csv(columns: list[tuple[str, str]], rows: dict[str, dict[str, Any]]) -> str:
    """The headline table as CSV: full precision, an empty field where a number is missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", *(c for _, c in columns)])
    for label, row in rows.items():
        values = [row.get(c) for _, c in columns]
        writer.writerow(
            [label, *("" if v is None or (isinstance(v, float) and v != v) else v for v in values)]
        )
    return buffer.getvalue()


def comparison_markdown(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    sections = []
    for benchmark, rows in tables.items():
        columns = list(dict.fromkeys(c for row in rows.values() for c in row if c != "avg"))
        if any("avg" in row for row in rows.values()):
            columns.append("avg")
        body = [[label, *(_value(row.get(c)) for c in columns)] for label, row in rows.items()]
        display = display_of(benchmark)
        sections.append(f"## {display.title}\n\n" + markdown_table(["model", *columns], body, display.digits))
    return "\n\n".join(sections) + "\n"


def _value(value: Any) -> Any:
    return float("nan") if value is None else value


def write_comparison(
    paths: Sequence[str], output_dir: Path, names: Sequence[str] | None = None
) -> tuple[str, list[Path]]:
    """Write comparison.md (the headline table, then one table per benchmark), comparison.csv
    (the headline table), comparison.json and <benchmark>.png; returns the markdown and the paths."""
    runs = [load_run(p) for p in paths]
    labels = labels_for(runs, paths, names)
    tables = comparison_tables(runs, labels)
    columns, rows = headline_rows(runs, labels)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = "# Comparison\n\n## Headline\n\n" + headline_markdown(columns, rows) + "\n\n"
    markdown += comparison_markdown(tables)
    written = [output_dir / "comparison.md", output_dir / "comparison.csv", output_dir / "comparison.json"]
    written[0].write_text(markdown)
    written[1].write_text(headline_csv(columns, rows))
    headline = {label: {c: row.get(c) for _, c in columns} for label, row in rows.items()}
    written[2].write_text(
        json.dumps(
            {"runs": dict(zip(labels, paths, strict=True)), "headline": headline, "tables": tables}, indent=2
        )
        + "\n"
    )
    for benchmark, rows in tables.items():
        clean = {label: {k: v for k, v in row.items() if v is not None} for label, row in rows.items()}
        written.append(plot_summaries(clean, display_of(benchmark), output_dir / f"{benchmark}.png"))
    return markdown, written
