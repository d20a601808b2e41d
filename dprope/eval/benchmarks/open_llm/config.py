"""The config of the short-context benchmarks (``eval.open_llm``): the DPRoPE paper's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from dprope.eval.harness import LmEvalConfig, LmEvalTask


def _paper_settings() -> list[LmEvalTask]:
    return [
        LmEvalTask("truthfulqa_mc2", 0, "acc"),
        LmEvalTask("hellaswag", 0, "acc_norm"),  # the paper's 0-shot (the leaderboard: 10-shot)
        LmEvalTask("mmlu", 5, "acc", subtask_mean=True),
        LmEvalTask("arc_challenge", 25, "acc_norm"),
    ]


@dataclass
class OpenLLMConfig(LmEvalConfig):
    tasks: list[LmEvalTask] = field(
        default_factory=_paper_settings
    )  # {name, num_fewshot, metric, subtask_mean} per task
