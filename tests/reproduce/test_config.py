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
            "exceeds the model preset's 32 positions",
        ),
        ("reproduce.finetune.tokens=0", "reproduce.finetune.tokens", "must be positive"),
        ("reproduce.finetune.tokens=100", "reproduce.finetune.tokens", "less than one step"),
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
    for preset, lengths in (("cpu", [128, 256, 512]), ("gpu", [512, 1024, 2048])):
        repro = Reproduction.from_plain(compose_plain([f"reproduce={preset}"]))
        assert repro.lengths == lengths
        assert repro.finetune_steps * repro.reproduce.finetune.global_batch_size * repro.target_length == (
            repro.reproduce.finetune.tokens
        )
        names = [s.name for s in Pipeline(repro).stages]
        # analysis, then per seed: pretrain, 6 training-free, 3 x (fine-tune, measure)
        assert len(names) == 1 + 3 * (1 + 6 + 2 * 3)
        assert names[:3] == ["analysis", "seed0/pretrain", "seed0/free/none"]


def test_stage_keys_follow_their_inputs(tmp_path):
    """A fine-tuning change invalidates fine-tuning and what it feeds, never pre-training."""
    base = Pipeline(Reproduction.from_plain(compose_plain(miniature(tmp_path, tmp_path))))
    changed = Pipeline(
        Reproduction.from_plain(compose_plain(miniature(tmp_path, tmp_path, "reproduce.finetune.lr=1e-3")))
    )
    moved = {a.name for a, b in zip(base.stages, changed.stages, strict=True) if a.digest != b.digest}
    assert moved == {
        f"seed{s}/{k}/{n}" for s in (0, 1, 2) for k in ("finetune", "tuned") for n in ("pi", "yarn", "dprope")
    }
    longer = Pipeline(
        Reproduction.from_plain(compose_plain(miniature(tmp_path, tmp_path, "reproduce.pretrain.steps=5")))
    )
    unmoved = {a.name for a, b in zip(base.stages, longer.stages, strict=True) if a.digest == b.digest}
    assert unmoved == {"analysis"}


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
