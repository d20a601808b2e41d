"""A RULER subset (Hsieh et al., 2024): NIAH single / multi-key / multi-value / multi-query,
variable tracking and common-words extraction at several lengths, drawn from a seed.

Length rule (RULER's): a sample of length T leaves room for the task's generation length g, so
its prompt (template, haystack and answer prefix) is the longest of whole haystack units with at
most T - g tokens. Score: RULER's string-match-all x 100, averaged over samples; the summary is
the mean over tasks at each length, and ``avg`` over lengths.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from dprope.config import ConfigError
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table, mean
from dprope.eval.generation import greedy_generate
from dprope.eval.ruler_tasks import TASKS, string_match_all


@dataclass
class RulerConfig:
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # keys of ruler_tasks.TASKS
    lengths: list[int] = field(default_factory=lambda: [4096, 8192, 16384])  # T = prompt + generation room
    num_samples: int = 50  # samples per task and length
    max_new_tokens: int | None = None  # null = the task's RULER default (NIAH 128, VT 30, CWE 120)
    num_needles: int = 4  # needles of the multi-key / multi-value / multi-query variants
    vt_hops: int = 4  # variable tracking: assignments chained after the first
    vt_chains: int = 1  # variable tracking: chains (the first is asked for, the others distract)
    cwe_words: int = 10  # common-words extraction: words to find
    cwe_common_freq: int = 30  # occurrences of each common word
    cwe_uncommon_freq: int = 3  # occurrences of each rare word

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", "must list at least one task")
        for i, name in enumerate(self.tasks):
            if name not in TASKS:
                raise ConfigError(f"tasks[{i}]", f"unknown RULER task {name!r} (known: {', '.join(TASKS)})")
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ConfigError(
                "lengths", f"must be a non-empty list of positive token counts (got {self.lengths})"
            )
        for name in ("num_samples", "num_needles", "vt_hops", "vt_chains", "cwe_words", "cwe_uncommon_freq"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1 (got {getattr(self, name)})")
        if self.cwe_common_freq <= self.cwe_uncommon_freq:
            raise ConfigError("cwe_common_freq", f"must exceed cwe_uncommon_freq ({self.cwe_uncommon_freq})")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 or null (got {self.max_new_tokens})")

    def new_tokens(self, task: str) -> int:
        return self.max_new_tokens or TASKS[task].default_max_new_tokens


@dataclass
class RulerSample:
    task: str
    length: int
    input_ids: list[int]
    answers: list[str]


def fit_units(count_tokens: Callable[[int], int], budget: int, hint: int | None = None) -> int:
    """The largest n with count_tokens(n) <= budget (count_tokens increasing in n), or -1."""
    if hint is not None and count_tokens(hint) <= budget < count_tokens(hint + 1):
        return hint
    base = count_tokens(0)
    if base > budget:
        return -1
    probe = 4
    per_unit = max((count_tokens(probe) - base) / probe, 1e-3)
    lo, hi = 0, int((budget - base) / per_unit * 1.1) + probe
    while count_tokens(hi) <= budget:
        if hi > 4 * budget:  # the haystack stopped growing: cannot happen with the tasks above
            return hi
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count_tokens(mid) <= budget else (lo, mid)
    return lo


def build_samples(task_name: str, length: int, cfg: RulerConfig, tokenizer, seed: int) -> list[RulerSample]:
    task, budget = TASKS[task_name], length - cfg.new_tokens(task_name)
    rng = random.Random(f"{seed}-{task_name}-{length}")
    samples, hint = [], None
    for _ in range(cfg.num_samples):
        draw = task.draw(rng, cfg, max_units=budget // cfg.cwe_uncommon_freq + 1)

        def count_tokens(units: int, draw=draw) -> int:
            return len(tokenizer(task.render(draw, units, cfg), add_special_tokens=True)["input_ids"])

        units = fit_units(count_tokens, budget, hint)
        if units < 0:
            raise ConfigError(
                "eval.ruler.lengths",
                f"{length} leaves no room for a {task_name} prompt after {length - budget} generated tokens",
            )
        hint = units
        ids = list(tokenizer(task.render(draw, units, cfg), add_special_tokens=True)["input_ids"])
        samples.append(RulerSample(task_name, length, ids, draw.answers))
    return samples


def prepare_ruler(cfg: RulerConfig, tokenizer, ctx: EvalContext) -> list[RulerSample]:
    for length in cfg.lengths:
        check_length("eval.ruler.lengths", length, ctx)
    return [
        s
        for task in cfg.tasks
        for length in cfg.lengths
        for s in build_samples(task, length, cfg, tokenizer, ctx.seed)
    ]


def run_ruler(
    model, tokenizer, cfg: RulerConfig, samples: list[RulerSample], ctx: EvalContext
) -> BenchmarkResult:
    scores: dict[str, dict[str, float]] = {}
    records = []
    for task in cfg.tasks:
        for length in cfg.lengths:
            group = [s for s in samples if s.task == task and s.length == length]
            predictions = greedy_generate(
                model,
                tokenizer,
                [s.input_ids for s in group],
                cfg.new_tokens(task),
                batch_size=ctx.batch_size,
                desc=f"ruler {task}@{length}",
                progress=ctx.progress,
            )
            matched = [string_match_all(p, s.answers) for s, p in zip(group, predictions, strict=True)]
            scores.setdefault(task, {})[str(length)] = 100.0 * mean(matched)
            records += [
                {
                    "task": task,
                    "length": length,
                    "prompt_tokens": len(s.input_ids),
                    "prediction": p,
                    "answers": s.answers,
                    "score": m,
                }
                for s, p, m in zip(group, predictions, matched, strict=True)
            ]
    columns = [str(n) for n in cfg.lengths]
    summary = {c: mean([scores[t][c] for t in cfg.tasks]) for c in columns}
    summary["avg"] = mean(list(summary.values()))
    rows = [[t, *(scores[t][c] for c in columns), mean([scores[t][c] for c in columns])] for t in cfg.tasks]
    rows.append(["**average**", *summary.values()])
    markdown = "String-match-all (x100) by sequence length (tokens):\n\n" + markdown_table(
        ["task", *columns, "avg"], rows
    )
    return BenchmarkResult(
        "ruler", summary, {"scores": scores, "samples_per_cell": cfg.num_samples}, records, markdown
    )
