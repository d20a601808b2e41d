"""Every `eval` preset composes into a valid typed config; `all` is the union of the others."""

from __future__ import annotations

import pytest

from dprope.cli import compose_job, group_options, hydra_context
from dprope.config import to_typed
from dprope.eval.suite import BENCHMARKS, EvalConfig

PRESETS = group_options("eval")


def composed(*overrides: str):
    with hydra_context("evaluate"):
        return compose_job("evaluate", list(overrides))


def test_one_preset_per_benchmark_and_all():
    assert sorted(PRESETS) == sorted([*BENCHMARKS, "all"])


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_into_the_typed_config(preset):
    cfg = composed(f"eval={preset}", "model.pretrained=/some/dir")
    settings = to_typed(cfg.eval, "eval")
    assert settings.tasks == (list(BENCHMARKS) if preset == "all" else [preset])
    assert cfg.hydra.run.dir.startswith("outputs/eval/llama2-7b/") and cfg.hydra.job.chdir is False
    assert cfg.logger.kind == "none" and cfg.data.name == "pg19"


@pytest.mark.parametrize("benchmark", list(BENCHMARKS))
def test_presets_match_the_dataclass_defaults(benchmark):
    """A benchmark run through `eval.tasks` without its preset gets the preset's values."""
    single = to_typed(composed(f"eval={benchmark}").eval, "eval")
    every = to_typed(composed("eval=all").eval, "eval")
    assert getattr(single, benchmark) == getattr(EvalConfig(), benchmark) == getattr(every, benchmark)
