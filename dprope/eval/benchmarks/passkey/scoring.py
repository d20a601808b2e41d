"""Passkey scoring: a trial is correct when the first integer of the answer is the key; accuracy
by length and by length x depth (the grid's depths, or with random sampling the realised depths
binned into fifths)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from dprope.eval.benchmarks.passkey.config import PasskeyConfig
from dprope.eval.benchmarks.passkey.prompts import PasskeyPrompt
from dprope.eval.common import BenchmarkResult, markdown_table, mean

DEPTH_BINS = 5  # random sampling: realised depths binned into fifths for the heatmap


def is_correct(answer: str, key: str) -> bool:
    match = re.search(r"\d+", answer)
    return match is not None and match.group(0) == key


def depth_columns(cfg: PasskeyConfig) -> list[float]:
    """The heatmap's depth columns: the grid's depths, or the centres of the fifths."""
    if cfg.sampling == "grid":
        return list(cfg.depths)
    return [(k + 0.5) / DEPTH_BINS for k in range(DEPTH_BINS)]


def depth_column(cfg: PasskeyConfig, depth: float) -> float:
    if cfg.sampling == "grid":
        return depth
    return (min(int(depth * DEPTH_BINS), DEPTH_BINS - 1) + 0.5) / DEPTH_BINS


def _span(values: list[int]) -> list[int]:
    return [min(values), max(values)]


def score_passkey(
    cfg: PasskeyConfig, prompts: Sequence[PasskeyPrompt], answers: Sequence[str]
) -> BenchmarkResult:
    """Accuracy of ``answers`` (one per prompt, in order) by length and by length x depth column."""
    samples = [
        {
            "length": p.length,
            "tokens": len(p.input_ids),
            "depth": p.depth,
            "depth_column": depth_column(cfg, p.depth),
            "key": p.key,
            "answer": a,
            "correct": is_correct(a, p.key),
        }
        for p, a in zip(prompts, answers, strict=True)
    ]
    columns = depth_columns(cfg)
    lengths = list(dict.fromkeys(p.length for p in prompts))  # the configured or default lengths, in order

    def accuracy(length: int, column: float | None = None) -> float:
        hits = [
            s["correct"]
            for s in samples
            if s["length"] == length and (column is None or s["depth_column"] == column)
        ]
        return 100.0 * mean(hits) if hits else float("nan")

    by_length = {str(n): accuracy(n) for n in lengths}
    grid = [[accuracy(n, d) for d in columns] for n in lengths]  # (lengths, depth columns)
    summary = {**by_length, "avg": mean(list(by_length.values()))}
    markdown = "Accuracy (%) by prompt length (tokens):\n\n" + markdown_table(
        ["length", *by_length, "avg"], [["accuracy", *summary.values()]], 1
    )
    how = "depth bin centre (random split point)" if cfg.sampling == "random" else "key depth"
    markdown += f"\n\nAccuracy (%) by length and {how}:\n\n" + markdown_table(
        ["length \\ depth", *(f"{d:g}" for d in columns)],
        [[n, *row] for n, row in zip(lengths, grid, strict=True)],
        1,
    )
    details = {
        "sampling": cfg.sampling,
        "lengths": lengths,
        "sizing": cfg.sizing,
        "prompt_tokens": {str(n): _span([s["tokens"] for s in samples if s["length"] == n]) for n in lengths},
        "filler_chars": {str(n): _span([p.filler_chars for p in prompts if p.length == n]) for n in lengths},
        "depths": columns,
        "trials": cfg.trials,
        "accuracy_by_length": by_length,
        "accuracy": grid,
    }
    return BenchmarkResult("passkey", summary, details, samples, markdown)
