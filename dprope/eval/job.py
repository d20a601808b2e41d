"""The typed evaluation job built from a composed `configs/evaluate.yaml`: the one builder that
`launch/eval.py` and `scripts/slurm/submit.py --eval` share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dprope.config import to_typed
from dprope.data.config import DataConfig
from dprope.eval.suite import EvalConfig
from dprope.model import ModelConfig
from dprope.rope.registry import RopeConfig
from dprope.tracking import LoggerConfig


@dataclass
class EvalJob:
    model: ModelConfig
    eval: EvalConfig
    logger: LoggerConfig
    data: DataConfig | None  # the `data` preset; None when no selected benchmark reads it
    rope: (
        RopeConfig | None
    )  # a strategy applied to the checkpoint at load time (training-free); None = as saved

    @classmethod
    def from_config(cls, cfg: Any) -> EvalJob:
        settings = to_typed(cfg.eval, "eval")
        data = cfg.get("data")  # `~data` removes the group
        rope = cfg.get("rope")  # null unless `rope=<strategy>` is given
        return cls(
            model=to_typed(cfg.model, "model"),
            eval=settings,
            logger=to_typed(cfg.logger, "logger"),
            data=to_typed(data, "data") if data is not None and settings.reads_data() else None,
            rope=to_typed(rope, "rope") if rope is not None else None,
        )
