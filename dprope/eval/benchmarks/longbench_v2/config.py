"""The config of LongBench v2 (``eval.longbench_v2``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dprope.config import ConfigError, check_choice
from dprope.eval.harness import LmEvalConfig, LmEvalTask

TASK = "longbench_v2"  # the one lm-eval task the run defines over the data file
PROTOCOLS = ("official", "lm_eval")
EXPECTED_FILE = "the official data.json of THUDM/LongBench-v2 (a JSON list of 503 questions) or JSON lines"


def _one_task() -> list[LmEvalTask]:
    return [LmEvalTask(TASK, 0, "acc")]


@dataclass
class LongBenchV2Config(LmEvalConfig):
    tasks: list[LmEvalTask] = field(default_factory=_one_task)  # fixed: one task over data_file
    data_file: str | None = (
        None  # THUDM/LongBench-v2's data.json (or the same records as JSON lines); required
    )
    protocol: str = "official"  # official: generated answer, official extraction | lm_eval: lm-eval's longbench2 (letter log-likelihood)
    max_new_tokens: int = 128  # official protocol: generated tokens (the official 128)
    max_prompt_tokens: int | None = (
        None  # official protocol: longer prompts keep their first and last halves; null = context - max_new_tokens
    )
    compensated: bool = (
        False  # an unanswered question counts 0.25 (the official result.py's `compensated` switch)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if [(t.name, t.num_fewshot, t.metric) for t in self.tasks] != [(TASK, 0, "acc")]:
            raise ConfigError(
                "tasks", f"LongBench v2 runs as one zero-shot task, {TASK} (acc); use limit to subsample"
            )
        if self.include_path is not None:
            raise ConfigError("include_path", "not used by LongBench v2 (its task is defined from data_file)")
        check_choice(self, "protocol", PROTOCOLS)
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError("max_prompt_tokens", f"must be >= 1 or null (got {self.max_prompt_tokens})")
        if self.data_file is not None and not Path(self.data_file).expanduser().is_file():
            raise ConfigError("data_file", f"no file at {self.data_file} (expected {EXPECTED_FILE})")
