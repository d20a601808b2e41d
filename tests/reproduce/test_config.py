"""Bad input is refused with one line naming the field, before any stage runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dprope.config import ConfigError
from dprope.reproduce import Pipeline, Reproduction
from tests.reproduce.conftest import compose_plain, miniature
from tests.train.conftest import train_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("reproduce.factor=0.5", "reproduce.factor", "must be >= 1"),
        (
            "reproduce.pretrain.length=64",
            "reproduce.pretrain.length",
            "exceeds the model preset's 48 positions",
        ),
        ("reproduce.pretrain.length=20", "reproduce.pretrain.length", "must be >= 28 to hold a passkey"),
        ("reproduce.finetune.tokens=0", "reproduce.finetune.tokens", "must be positive"),
        ("reproduce.finetune.tokens=100", "reproduce.finetune.tokens", "less than one step"),
        ("reproduce.synthetic.share=1.0", "reproduce.synthetic.share", "must be in [0, 1)"),
        ("reproduce.measure.retrieval.depths=[0.5,1.5]", "reproduce.measure.retrieval.depths", "in [0, 1]"),
        ("reproduce.measure.retrieval.trials=0", "reproduce.measure.retrieval.trials", "must be positive"),
        ("reproduce.attention.modes=[causal]", "reproduce.attention.modes", "document, anchor"),
        (
            "reproduce.finetune.strategies=[pi,dprope]",
            "reproduce.attention.strategies",
            "yarn not in reproduce.finetune.strategies",
        ),
        ("data.add_bos=false", "data.add_bos", "BOS token (the anchor)"),
        ("reproduce.precision.buckets=0", "reproduce.precision.buckets", "must be positive"),
        (
            "reproduce.measure.training_free=[none,rope9]",
            "reproduce.measure.training_free",
            "distinct strategies",
        ),
        ("reproduce.num_interpolated_dims=40", "reproduce.num_interpolated_dims", "dprope"),
        ("reproduce.measure.split=train", "reproduce.measure.split", "data.eval_splits"),
        ("reproduce.seeds=[]", "reproduce.seeds", "non-empty"),
    ],
)
def test_bad_input_names_the_field(override, field, words, tmp_path):
    with pytest.raises(ConfigError) as err:
        Reproduction.from_plain(compose_plain(miniature(tmp_path / "run", tmp_path, override)))
    assert err.value.field == field
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_presets_compose_and_plan():
    for preset, lengths, seeds in (("cpu", [128, 256, 512], 4), ("gpu", [512, 1024, 2048], 5)):
        repro = Reproduction.from_plain(compose_plain([f"reproduce={preset}"]))
        assert repro.lengths == lengths
        assert repro.finetune_steps * repro.reproduce.finetune.global_batch_size * repro.target_length == (
            repro.reproduce.finetune.tokens
        )
        names = [s.name for s in Pipeline(repro).stages]
        # corpus, analysis, then per seed: pretrain, precision, 6 training-free,
        # 4 causal + 2 x 2 masked x (fine-tune, measure)
        assert repro.reproduce.seeds == list(range(seeds))
        assert len(names) == 2 + seeds * (1 + 1 + 6 + 2 * (4 + 4))
        assert names[:5] == ["corpus", "analysis", "seed0/pretrain", "seed0/precision", "seed0/free/none"]
        assert names[10:14] == [
            "seed0/finetune/none",
            "seed0/tuned/none",
            "seed0/finetune/pi",
            "seed0/tuned/pi",
        ]
        assert names[18:22] == [
            "seed0/finetune/dprope-document",
            "seed0/tuned/dprope-document",
            "seed0/finetune/dprope-anchor",
            "seed0/tuned/dprope-anchor",
        ]


def _pipeline(tmp_path, *extra):
    return Pipeline(Reproduction.from_plain(compose_plain(miniature(tmp_path, tmp_path, *extra))))


def _moved(base, changed) -> set[str]:
    return {a.name for a, b in zip(base.stages, changed.stages, strict=True) if a.digest != b.digest}


def test_stage_keys_follow_their_inputs(tmp_path):
    """A change invalidates the stages that read it and what they feed, nothing upstream."""
    tuned = ["none", "pi", "yarn", "dprope"] + [
        f"{n}-{m}" for n in ("dprope", "yarn") for m in ("document", "anchor")
    ]
    base = _pipeline(tmp_path)
    seeds = base.repro.reproduce.seeds
    moved = _moved(base, _pipeline(tmp_path, "reproduce.finetune.lr=1e-3"))
    assert moved == {f"seed{s}/{k}/{n}" for s in seeds for k in ("finetune", "tuned") for n in tuned}

    moved = _moved(base, _pipeline(tmp_path, "reproduce.measure.retrieval.trials=3"))
    assert moved == {
        f"seed{s}/free/{n}" for s in seeds for n in ("none", "pi", "ntk", "yarn", "dprope", "llama3")
    } | {f"seed{s}/tuned/{n}" for s in seeds for n in tuned}

    moved = _moved(base, _pipeline(tmp_path, "reproduce.precision.shift=512"))
    assert moved == {f"seed{s}/precision" for s in seeds}

    # a seed added (or dropped) leaves every stage of the other seeds as it was
    two, three = _pipeline(tmp_path, "reproduce.seeds=[0,1]"), _pipeline(tmp_path, "reproduce.seeds=[0,1,2]")
    kept = {s.name: s.digest for s in two.stages}
    assert {s.name: s.digest for s in three.stages if s.name in kept} == kept
    assert {s.name for s in three.stages} - set(kept) == {
        s.name for s in three.stages if s.name.startswith("seed2/")
    }

    everything = {s.name for s in base.stages}
    assert _moved(base, _pipeline(tmp_path, "reproduce.pretrain.steps=5")) == everything - {
        "corpus",
        "analysis",
    }
    assert _moved(base, _pipeline(tmp_path, "reproduce.synthetic.share=0.25")) == everything - {"analysis"}


def test_stage_keys_do_not_hold_the_run_directory(tmp_path):
    """A moved run directory keeps every finished stage."""
    base, moved = (
        Pipeline(Reproduction.from_plain(compose_plain(miniature(tmp_path / run, tmp_path)))) for run in "ab"
    )
    assert [s.digest for s in base.stages] == [s.digest for s in moved.stages]


def test_entry_point_refuses_before_any_stage(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch" / "reproduce.py"),
            f"reproduce.output_dir={run}",
            "reproduce.factor=0.5",
        ],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: reproduce.factor: must be >= 1 (got 0.5)"]
    assert not run.exists() or not any(run.iterdir())  # Hydra may create the run directory, nothing more
