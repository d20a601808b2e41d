"""The config of RULER (``eval.ruler``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dprope.config import ConfigError
from dprope.eval.benchmarks.ruler.tasks import TASKS

QA_FILES = {"squad": "squad_file", "hotpotqa": "hotpotqa_file"}


@dataclass
class RulerConfig:
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # keys of tasks.TASKS (RULER's 13)
    lengths: list[int] = field(default_factory=lambda: [4096, 8192, 16384])  # T = prompt + generation room
    num_samples: int = 500  # samples per task and length (RULER's default: 500)
    max_new_tokens: int | None = None  # null = RULER's per task (NIAH 128, VT 30, CWE 120, FWE 50, QA 32)
    essay_file: str | None = None  # essay haystack, a text file (RULER: Paul Graham's essays)
    essay_split: str | None = None  # else this eval split of the data preset (e.g. test); both null = skipped
    squad_file: str | None = None  # SQuAD 2.0 dev JSON (dev-v2.0.json) for qa_1; null = qa_1 skipped
    hotpotqa_file: str | None = None  # HotpotQA dev distractor JSON for qa_2; null = qa_2 skipped
    threshold: float = 85.6  # effective length: the per-length mean must stay above it (RULER: 85.6)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", "must list at least one task")
        for i, name in enumerate(self.tasks):
            if name not in TASKS:
                raise ConfigError(f"tasks[{i}]", f"unknown RULER task {name!r} (known: {', '.join(TASKS)})")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"lists a task twice ({self.tasks})")
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ConfigError(
                "lengths", f"must be a non-empty list of positive token counts (got {self.lengths})"
            )
        if self.num_samples < 1:
            raise ConfigError("num_samples", f"must be >= 1 (got {self.num_samples})")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 or null (got {self.max_new_tokens})")
        if not 0.0 <= self.threshold <= 100.0:
            raise ConfigError("threshold", f"must be a score in [0, 100] (got {self.threshold})")
        for name in ("essay_file", *QA_FILES.values()):
            path = getattr(self, name)
            if path is not None and Path(path).expanduser().is_dir():
                raise ConfigError(name, f"{path} is a directory, not a file")
            if path is not None and not Path(path).expanduser().is_file():
                raise ConfigError(name, f"{path} does not exist or is not a file")

    def new_tokens(self, task: str) -> int:
        return self.max_new_tokens or TASKS[task].max_new_tokens
