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


VARIANTS = {"perplexity_proofpile": "perplexity"}  # a protocol of a benchmark: its preset plus overrides


def test_one_preset_per_benchmark_and_all():
    assert sorted(PRESETS) == sorted([*BENCHMARKS, "all", *VARIANTS])


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_into_the_typed_config(preset):
    cfg = composed(f"eval={preset}", "model.pretrained=/some/dir")
    settings = to_typed(cfg.eval, "eval")
    assert settings.tasks == (list(BENCHMARKS) if preset == "all" else [VARIANTS.get(preset, preset)])
    assert cfg.hydra.run.dir.startswith("outputs/eval/llama2-7b/") and cfg.hydra.job.chdir is False
    assert cfg.logger.kind == "none" and cfg.data.name == "pg19"


@pytest.mark.parametrize("benchmark", list(BENCHMARKS))
def test_presets_match_the_dataclass_defaults(benchmark):
    """A benchmark run through `eval.tasks` without its preset gets the preset's values."""
    single = to_typed(composed(f"eval={benchmark}").eval, "eval")
    every = to_typed(composed("eval=all").eval, "eval")
    assert getattr(single, benchmark) == getattr(EvalConfig(), benchmark) == getattr(every, benchmark)


def test_proofpile_preset_is_the_yarn_protocol():
    cfg = composed("eval=perplexity_proofpile", "data=proofpile")
    settings = to_typed(cfg.eval, "eval").perplexity
    assert (settings.mode, settings.aggregate, settings.bos_every_window) == ("truncate", "window", True)
    assert (settings.max_documents, settings.min_document_tokens) == (10, 131072)
    assert cfg.data.hub_id == "hoskinson-center/proof-pile" and cfg.data.eval_splits == ["test"]


def test_evaluation_data_follows_the_model():
    assert composed("model=tiny").data.name == "embedded"
    assert composed("model=llama2_13b").data.name == "pg19"
    assert composed("model=tiny", "data=local").data.name == "local"
