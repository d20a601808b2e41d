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
    repro = Reproduction.from_plain(
        compose_plain(
            miniature(root, data_cache, "reproduce.seeds=[0,1]", "reproduce.attention.strategies=[dprope]")
        )
    )
    pipeline = Pipeline(repro)
    report = pipeline.run()

    for stage in pipeline.stages:
        assert (root / stage.name / DONE).exists(), stage.name
    corpus = [json.loads(line)["text"] for line in (root / "corpus/train.jsonl").read_text().splitlines()]
    passkeys = [t for t in corpus if "\npass key?" in t]
    assert 0 < len(passkeys) < len(corpus) and max(map(len, passkeys)) <= 48 - 2
    for seed in (0, 1):
        assert (root / f"seed{seed}/pretrain/hf/model.safetensors").exists()
        for name, rope_type in ROPE_TYPES.items():  # e: the strategy applied at load time, measured
            metrics = json.loads((root / f"seed{seed}/free/{name}/metrics.json").read_text())
            assert metrics["rope_parameters"]["rope_type"] == rope_type
            assert set(metrics["perplexity"]) == {"48", "96"} and len(metrics["loss_by_position"]) == 95
            grid = metrics["retrieval"]["grid"]
            assert set(grid) == {"48", "96"} and set(grid["96"]) == {"0", "0.25", "0.5", "0.75", "1"}
            assert all(v in (0.0, 0.5, 1.0) for row in grid.values() for v in row.values())  # 2 trials a cell
        for name in ("none", "pi", "yarn", "dprope", "dprope-document", "dprope-anchor"):
            # f, g: fine-tuned from the export at s x L, then measured
            config = json.loads((root / f"seed{seed}/finetune/{name}/hf/config.json").read_text())
            assert config["rope_parameters"]["rope_type"] == ROPE_TYPES[name.split("-")[0]]
            assert config["max_position_embeddings"] == 96
            tuned = json.loads((root / f"seed{seed}/tuned/{name}/metrics.json").read_text())
            assert tuned["rope_parameters"] == config["rope_parameters"]
        for mode in ("document", "anchor"):
            done = json.loads((root / f"seed{seed}/finetune/dprope-{mode}" / DONE).read_text())
            assert done["summary"]["attention"] == mode
            assert (
                f"attention: {mode}" in (root / f"seed{seed}/finetune/dprope-{mode}/config.yaml").read_text()
            )
        precision = json.loads((root / f"seed{seed}/precision/trained/precision.json").read_text())
        assert precision["length"] == 96 and precision["shift"] == 256
        assert set(precision["first_token_share"]) == {
            "bf16 / model rotation",
            "bf16 / fp32 rotation",
            "float32",
        }
        assert (root / f"seed{seed}/precision/random_init/precision.json").exists()
    # the two seeds pre-trained different models
    losses = [
        json.loads((root / f"seed{s}/pretrain/{DONE}").read_text())["summary"]["final_loss"] for s in (0, 1)
    ]
    assert losses[0] != losses[1]

    text = report.read_text()
    assert "Status: complete." in text
    assert text.splitlines()[4].startswith("**Verdict.** Fine-tuned perplexity at s x L = 96")
    assert "| dprope |" in text and " ± " in text  # two seeds: mean ± spread
    assert "| retrieval @ 96 (%) |" in text  # a row of the paired tables
    assert "| DPRoPE | anchor |" in text and "| DPRoPE: anchor − causal |" in text
    assert "| pre-trained | float32 |" in text
    for figure in ("ppl_by_length", "loss_by_position", "disturbance_vs_perplexity", "retrieval_heatmap"):
        assert (root / f"{figure}.png").stat().st_size > 0
    results = json.loads((root / "results.json").read_text())
    assert set(results["free"]["none"]["by_seed"]) == {"0", "1"}
    assert set(results["training"]["dprope-anchor"]) == {"0", "1"}

    # a re-run skips every stage
    done_before = {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages}
    Pipeline(repro).run()
    assert {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages} == done_before

    # a stage killed after training but before its DONE continues from its own checkpoint
    (root / "seed1/finetune/dprope-anchor" / DONE).unlink()
    Pipeline(repro).run()
    after = {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages}
    assert [n for n in after if after[n] != done_before[n]] == ["seed1/finetune/dprope-anchor"]
    metrics = (root / "seed1/finetune/dprope-anchor/metrics.jsonl").read_text().splitlines()
    assert len(metrics) == repro.finetune_steps  # resumed at its last step: no step trained twice

    # a new precision setting redoes the precision stages alone
    shifted = Reproduction.from_plain(
        compose_plain(
            miniature(
                root,
                data_cache,
                "reproduce.seeds=[0,1]",
                "reproduce.attention.strategies=[dprope]",
                "reproduce.precision.shift=128",
            )
        )
    )
    Pipeline(shifted).run()
    again = {s.name: (root / s.name / DONE).read_text() for s in pipeline.stages}
    assert sorted(n for n in again if again[n] != after[n]) == ["seed0/precision", "seed1/precision"]


def test_a_failing_stage_keeps_the_finished_ones_and_reports_them(tmp_path, data_cache):
    from dprope.reproduce.stages import Stage, StageFailed

    root = tmp_path / "run"
    pipeline = Pipeline(Reproduction.from_plain(compose_plain(miniature(root, data_cache))))

    def broken(directory):
        raise OSError("disk full")

    analysis = next(s for s in pipeline.stages if s.name == "analysis")
    pipeline.stages = [analysis, Stage("seed0/pretrain", {"broken": True}, broken)]
    with pytest.raises(StageFailed, match="stage seed0/pretrain failed: OSError: disk full"):
        pipeline.run()
    assert (root / "analysis" / DONE).exists() and (root / "analysis" / "analysis.json").exists()
    assert not (root / "seed0/pretrain" / DONE).exists()
    report = (root / "report.md").read_text()
    assert "Status: partial: 1 of 2 stages done." in report
    assert "(the paper's Table 1): not measured." in report
    assert "| dprope | 3" in report  # the disturbance column is there; no perplexity yet
