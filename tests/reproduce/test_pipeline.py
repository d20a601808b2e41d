"""A miniature of the whole reproduction through the real trainer, loader and measurements, then
a re-run that skips every stage and one that continues an interrupted stage."""

from __future__ import annotations

import json

import pytest

from dprope.reproduce import Pipeline, Reproduction
from dprope.reproduce.stages import DONE
from tests.reproduce.conftest import compose_plain, miniature

ROPE_TYPES = {
    "none": "default",
    "pi": "linear",
    "ntk": "default",
    "yarn": "yarn",
    "dprope": "longrope",
    "llama3": "llama3",
}


@pytest.mark.slow
def test_miniature_end_to_end_then_cached_and_resumed(tmp_path, data_cache):
    root = tmp_path / "run"
    repro = Reproduction.from_plain(compose_plain(miniature(root, data_cache, "reproduce.seeds=[0,1]")))
    pipeline = Pipeline(repro)
    report = pipeline.run()

    for stage in pipeline.stages:
        assert (root / stage.name / DONE).exists(), stage.name
    for seed in (0, 1):
        assert (root / f"seed{seed}/pretrain/hf/model.safetensors").exists()
        for name, rope_type in ROPE_TYPES.items():  # c: the strategy applied at load time, measured
            metrics = json.loads((root / f"seed{seed}/free/{name}/metrics.json").read_text())
            assert metrics["rope_parameters"]["rope_type"] == rope_type
            assert set(metrics["perplexity"]) == {"32", "64"} and len(metrics["loss_by_position"]) == 63
        for name in ("pi", "yarn", "dprope"):  # d: fine-tuned from the export at s x L, then measured
            config = json.loads((root / f"seed{seed}/finetune/{name}/hf/config.json").read_text())
            assert config["rope_parameters"]["rope_type"] == ROPE_TYPES[name]
            assert config["max_position_embeddings"] == 64
            tuned = json.loads((root / f"seed{seed}/tuned/{name}/metrics.json").read_text())
            assert tuned["rope_parameters"] == config["rope_parameters"]
    # the two seeds pre-trained different models
    losses = [
        json.loads((root / f"seed{s}/pretrain/{DONE}").read_text())["summary"]["final_loss"] for s in (0, 1)
    ]
    assert losses[0] != losses[1]

    text = report.read_text()
    assert "Status: complete." in text
    assert "| dprope |" in text and " ± " in text  # two seeds: mean ± spread
    for figure in ("ppl_by_length.png", "loss_by_position.png", "disturbance_vs_perplexity.png"):
        assert (root / figure).stat().st_size > 0
    results = json.loads((root / "results.json").read_text())
    assert len(results["free"]["none"]["perplexity"]["64"]) == 2

    # a re-run skips every stage
    done_before = {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages}
    Pipeline(repro).run()
    assert {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages} == done_before

    # a stage killed after training but before its DONE continues from its own checkpoint
    (root / "seed1/finetune/yarn" / DONE).unlink()
    Pipeline(repro).run()
    after = {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages}
    assert [n for n in after if after[n] != done_before[n]] == ["seed1/finetune/yarn"]
    metrics = (root / "seed1/finetune/yarn/metrics.jsonl").read_text().splitlines()
    assert len(metrics) == repro.finetune_steps  # resumed at its last step: no step trained twice


def test_a_failing_stage_keeps_the_finished_ones_and_reports_them(tmp_path, data_cache):
    from dprope.reproduce.stages import Stage, StageFailed

    root = tmp_path / "run"
    pipeline = Pipeline(Reproduction.from_plain(compose_plain(miniature(root, data_cache))))

    def broken(directory):
        raise OSError("disk full")

    pipeline.stages = [pipeline.stages[0], Stage("seed0/pretrain", {"broken": True}, broken)]
    with pytest.raises(StageFailed, match="stage seed0/pretrain failed: OSError: disk full"):
        pipeline.run()
    assert (root / "analysis" / DONE).exists() and (root / "analysis" / "analysis.json").exists()
    assert not (root / "seed0/pretrain" / DONE).exists()
    report = (root / "report.md").read_text()
    assert "Status: partial: 1 of 2 stages done." in report
    assert "| dprope | 3" in report  # the disturbance column is there; no perplexity yet
