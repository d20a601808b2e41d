"""Experiment tracking, shared by training and evaluation: the `logger` config group
(`configs/logger/*.yaml`) and wandb when configured, nothing otherwise (training always writes
metrics.jsonl, evaluation results.json)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, check_choice

LOGGERS = ("none", "wandb")


@dataclass
class LoggerConfig:
    kind: str = "none"  # none | wandb (metrics.jsonl and the console are always written)
    project: str = "dprope"  # wandb project
    entity: str | None = None  # wandb entity (team or user); null = the default
    run_name: str | None = None  # null = the last component of trainer.output_dir
    tags: list[str] = field(default_factory=list)  # wandb tags
    mode: str | None = None  # online | offline | disabled; null = WANDB_MODE, else offline without an API key

    def __post_init__(self) -> None:
        check_choice(self, "kind", LOGGERS)
        if self.mode not in (None, "online", "offline", "disabled"):
            raise ConfigError("mode", f"must be online, offline or disabled (got {self.mode!r})")


def wandb_mode(cfg: LoggerConfig) -> str:
    """Configured mode, else WANDB_MODE, else online with an API key and offline without one."""
    if cfg.mode:
        return cfg.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    """Rank 0's link to wandb; every method is a no-op for `logger=none` and on other ranks."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], enabled: bool):
        self.run = None
        if not enabled or cfg.kind == "none":
            return
        import wandb

        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=cfg.run_name or run_dir.resolve().name,
            tags=list(cfg.tags),
            config=config,
            dir=str(run_dir),
            mode=wandb_mode(cfg),
            resume="allow",
            id=_run_id(run_dir),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _run_id(run_dir: Path) -> str:
    """A stable wandb id per run directory, so a resumed run continues the same wandb run."""
    path = run_dir / "wandb_id.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
    return run_id
