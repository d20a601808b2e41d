"""The config of BABILong (``eval.babilong``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dprope.config import ConfigError
from dprope.eval.harness import LmEvalConfig, LmEvalTask

QA_TASKS = tuple(f"qa{i}" for i in range(1, 21))  # qa1-qa5 at every length, qa6-qa20 at 0k only
LENGTH_NAMES = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k")  # the 1k-samples splits
LAYOUT = "<data_dir>/<length>/<qa>-00000-of-00001.parquet, the layout of RMT-team/babilong-1k-samples"
_LENGTH = re.compile(r"^\d+[kM]$")


def _main_tasks() -> list[LmEvalTask]:
    """qa1-qa5, lm-eval's babilong tasks with their own 2 in-context examples (num_fewshot 2)."""
    return [LmEvalTask(f"babilong_{qa}", 2, "acc") for qa in QA_TASKS[:5]]


@dataclass
class BabilongConfig(LmEvalConfig):
    # lm-eval's babilong_qa1 ... babilong_qa20 ({name, num_fewshot, metric}); default qa1-qa5, 2-shot
    tasks: list[LmEvalTask] = field(default_factory=_main_tasks)
    data_dir: str | None = (
        None  # a local copy of RMT-team/babilong-1k-samples (or RMT-team/babilong); required
    )
    lengths: list[str] | None = (
        None  # splits such as 0k, 4k, 16k; null = 0k and 1k, 2k, 4k, ... up to the context
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for i, task in enumerate(self.tasks):
            if task.name.removeprefix("babilong_") not in QA_TASKS or not task.name.startswith("babilong_"):
                raise ConfigError(
                    f"tasks[{i}].name",
                    f"{task.name!r} is not an lm-eval BABILong task (babilong_qa1 ... babilong_qa20)",
                )
        if self.include_path is not None:
            raise ConfigError("include_path", "not used by BABILong (its tasks are lm-eval's, over data_dir)")
        if self.lengths is not None:
            if not self.lengths or any(not _LENGTH.match(n) for n in self.lengths):
                raise ConfigError(
                    "lengths", f"must be null or BABILong split names such as 0k, 4k, 1M (got {self.lengths})"
                )
            if len(set(self.lengths)) != len(self.lengths):
                raise ConfigError("lengths", f"lists a length twice ({self.lengths})")
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            raise ConfigError("data_dir", f"no directory at {self.data_dir} (expected {LAYOUT})")


def tokens_of(length: str) -> int:
    """The nominal size of a split in tokens (4k -> 4096, 1M -> 1048576)."""
    return int(length[:-1]) * (1024 if length.endswith("k") else 1024 * 1024)


def default_lengths(max_positions: int) -> list[str]:
    """0k, then every 1k-samples split whose nominal size fits the checkpoint's context."""
    return [n for n in LENGTH_NAMES if tokens_of(n) <= max_positions]
