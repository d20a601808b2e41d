"""Every `eval` preset composes into a valid typed config; `all` is the union of the others."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dprope.cli import CONFIG_DIR, group_options
from dprope.eval.suite import BENCHMARKS, EvalConfig, eval_config

PRESETS = group_options("eval")


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="evaluate", overrides=list(overrides), return_hydra_config=True)


VARIANTS = {"perplexity_proofpile": "perplexity"}  # a protocol of a benchmark: its preset plus overrides


def test_one_preset_per_benchmark_and_all():
    assert sorted(PRESETS) == sorted([*BENCHMARKS, "all", *VARIANTS])


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_into_the_typed_config(preset):
    cfg = composed(f"eval={preset}", "model.pretrained=/some/dir")
    settings = eval_config(OmegaConf.to_container(cfg.eval, resolve=True))
    assert settings.tasks == (list(BENCHMARKS) if preset == "all" else [VARIANTS.get(preset, preset)])
    assert cfg.hydra.run.dir.startswith("outputs/eval/llama2-7b/") and cfg.hydra.job.chdir is False
    assert cfg.logger.kind == "none" and cfg.data.name == "pg19"


@pytest.mark.parametrize("benchmark", list(BENCHMARKS))
def test_presets_match_the_dataclass_defaults(benchmark):
    """A benchmark run through `eval.tasks` without its preset gets the preset's values."""
    single = eval_config(OmegaConf.to_container(composed(f"eval={benchmark}").eval, resolve=True))
    every = eval_config(OmegaConf.to_container(composed("eval=all").eval, resolve=True))
    assert getattr(single, benchmark) == getattr(EvalConfig(), benchmark) == getattr(every, benchmark)
