"""Experiment tracking: wandb when configured, nothing otherwise (metrics.jsonl is always written)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from dprope.train.config import LoggerConfig


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
