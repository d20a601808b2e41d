"""The config of LongBench-E (``eval.longbench_e``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dprope.config import ConfigError, check_choice
from dprope.eval.benchmarks.longbench_e.scoring import AVERAGES
from dprope.eval.benchmarks.longbench_e.tasks import TASKS


@dataclass
class LongBenchConfig:
    datasets: list[str] = field(default_factory=lambda: list(TASKS))  # LongBench-E datasets (all 13)
    data_dir: str | None = None  # directory of <dataset>.jsonl (the official data.zip); null = the hub
    predictions_dir: str | None = (
        None  # re-score DIR/<dataset>.jsonl (official pred.py files, e.g. gov_report.jsonl); no model loads
    )
    max_length: int | None = (
        None  # prompt tokens kept; null = 1000 x (context / 1024) - reserve_tokens (official model2maxlen)
    )
    reserve_tokens: int = 500  # the official budget's margin (3500 of a 4k context)
    classification_fix: bool = (
        False  # trec: remove every class contained in the reference (official loop skips some)
    )
    average: str = "categories"  # headline row: categories (official README) | datasets (flat mean of the 13)
    max_new_tokens: int | None = None  # override every dataset's official generation length (quick runs only)
    max_samples: int | None = None  # first N samples per dataset (quick runs only); null = all

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("datasets", "must list at least one dataset")
        for i, name in enumerate(self.datasets):
            if name not in TASKS:
                raise ConfigError(
                    f"datasets[{i}]", f"unknown LongBench-E dataset {name!r} (known: {', '.join(TASKS)})"
                )
        for name in ("max_length", "max_new_tokens", "max_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be >= 1 or null (got {value})")
        if self.reserve_tokens < 0:
            raise ConfigError("reserve_tokens", f"must be >= 0 (got {self.reserve_tokens})")
        check_choice(self, "average", AVERAGES)
