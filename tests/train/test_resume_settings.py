"""A resume with other settings than its checkpoint's: a longer run continues with unseen samples
and equals a run planned that long; another global batch continues the same order; another lr is
applied; the strategy, the data, the sequence length or the model's size are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dprope.config import ConfigError
from dprope.data.sampler import covering_size
from dprope.train import checkpoint, resume_settings
from dprope.train.checkpoint import TrainerState, checkpoint_root
from dprope.train.loop import samples_needed
from dprope.train.resume_settings import compare
from tests.train.conftest import read_metrics, run_train, small_run

STEPS = 4


def overrides(output_dir: Path, data_cache: Path, *extra: str) -> list[str]:
    """A constant-lr run (no warmup), checkpoints every 2 steps."""
    return small_run(output_dir, data_cache, "trainer.save_every=2", "trainer.export=false", *extra)


def losses(output_dir: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(output_dir)]


# --- the comparison, without a run ----------------------------------------------------------


def settings(**changes) -> dict:
    base = {
        "model": {
            "name": "tiny",
            "hidden_size": 64,
            "architecture": {"hidden_size": 64, "num_hidden_layers": 2},
        },
        "rope": {"name": "dprope", "factor": 4.0, "num_intervals": 360},
        "data": {"max_length": 256, "seed": 0, "cache_dir": "/a", "streaming": False, "shuffle_buffer": 1000},
        "trainer": {
            "steps": 4,
            "global_batch_size": 4,
            "lr": 1e-3,
            "seed": 42,
            "output_dir": "/x",
            "resume": "auto",
        },
    }
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        target = base[section]
        if "__" in key:
            key, _, inner = key.partition("__")
            target = target[key]
            key = inner
        target[key] = value
    return base


def test_unchanged_settings_resume_silently(tmp_path):
    assert compare(settings(), settings(), tmp_path, 2) == []
    # where the run is (output_dir, resume) is not a setting
    assert (
        compare(settings(), settings(trainer__output_dir="/y", trainer__resume="/x/step"), tmp_path, 2) == []
    )


def test_applicable_changes_are_listed(tmp_path):
    changed = compare(
        settings(),
        settings(trainer__steps=6, trainer__global_batch_size=8, trainer__lr=1e-4, data__cache_dir="/b"),
        tmp_path,
        4,
    )
    assert changed == [
        "data.cache_dir '/a' -> '/b'",
        "trainer.steps 4 -> 6",
        "trainer.global_batch_size 4 -> 8",
        "trainer.lr 0.001 -> 0.0001",
    ]
    # the shuffle buffer only orders a stream
    assert compare(settings(), settings(data__shuffle_buffer=10), tmp_path, 4) == []


@pytest.mark.parametrize(
    "change,field,old,new",
    [
        ({"rope__name": "pi"}, "rope.name", "'dprope'", "'pi'"),
        ({"rope__factor": 2.0}, "rope.factor", "4.0", "2.0"),
        ({"data__max_length": 512}, "data.max_length", "256", "512"),
        ({"data__seed": 1}, "data.seed", "0", "1"),
        ({"trainer__seed": 7}, "trainer.seed", "42", "7"),
        ({"data__streaming": True, "data__shuffle_buffer": 10}, "data.streaming", "False", "True"),
    ],
)
def test_changes_that_cannot_be_applied_are_one_line_errors(tmp_path, change, field, old, new):
    with pytest.raises(ConfigError) as err:
        compare(settings(), settings(**change), tmp_path, 2)
    message = str(err.value)
    assert message.startswith(
        f"{field}: the checkpoint {tmp_path} was trained with {old}, this run has {new}"
    )
    assert "trainer.resume=never" in message and "trainer.output_dir" in message and "\n" not in message


def test_a_model_of_another_size_is_one_line(tmp_path):
    bigger = settings(model__architecture__hidden_size=128, model__hidden_size=128)
    with pytest.raises(ConfigError) as err:
        compare(settings(), bigger, tmp_path, 2)
    assert str(err.value).startswith(
        f"model: the checkpoint {tmp_path} holds a model of another size (hidden_size 64; this run builds hidden_size 128)"
    )


def test_fewer_steps_than_the_checkpoint_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.steps: 3 is below the step of the checkpoint .* \(4\)"):
        compare(settings(), settings(trainer__steps=3), tmp_path, 4)


def test_a_checkpoint_without_settings_is_not_compared(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        assert compare(None, settings(), tmp_path, 2) == []
    assert "records no settings" in caplog.text


def test_the_run_draws_the_consumed_samples_then_its_global_batch_per_step_left():
    from dprope.train.config import TrainerConfig

    trainer = TrainerConfig(steps=6, global_batch_size=8, micro_batch_size=2)
    assert samples_needed(trainer, TrainerState()) == 48
    assert samples_needed(trainer, TrainerState(step=4, consumed_samples=16)) == 16 + 2 * 8
    assert covering_size(32) == covering_size(48)  # one cache serves both: the same prefix


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory, data_cache) -> Path:
    out = tmp_path_factory.mktemp("four-steps")
    result = run_train(overrides(out, data_cache, f"trainer.steps={STEPS}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert resume_settings.read_settings(checkpoint_root(out) / "step_00000004")["rope"]["name"] == "dprope"
    return out


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.slow
def test_extending_a_run_equals_a_run_planned_that_long(four_steps, tmp_path, data_cache):
    extended = copy_run(four_steps, tmp_path / "extended")
    result = run_train(overrides(extended, data_cache, "trainer.steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    planned = tmp_path / "planned"
    result = run_train(overrides(planned, data_cache, "trainer.steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    # the same samples in the same order, so the same losses: steps 5-6 see unseen samples
    assert losses(extended) == losses(planned)
    assert losses(planned)[:STEPS] == losses(four_steps)
    applied = "resuming step_00000004 with changed settings, applied from step 5 on: trainer.steps 4 -> 6"
    assert applied in console


@pytest.mark.slow
def test_another_global_batch_continues_the_order_and_another_lr_is_applied(four_steps, tmp_path, data_cache):
    out = copy_run(four_steps, tmp_path / "changed")
    result = run_train(
        overrides(out, data_cache, "trainer.steps=6", "trainer.global_batch_size=8", "trainer.lr=1e-4")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(out)
    assert [r["consumed_samples"] for r in records] == [4, 8, 12, 16, 24, 32]
    # the optimizer state restored the old lr; the run's own is in force from step 5 on
    assert [r["lr"] for r in records] == [1e-3] * 4 + [1e-4] * 2
    console = result.stdout + result.stderr
    assert "trainer.global_batch_size 4 -> 8" in console and "trainer.lr 0.001 -> 0.0001" in console


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,start",
    [
        ("rope=pi", "error: rope.name: the checkpoint {ckpt} was trained with 'dprope', this run has 'pi': "),
        (
            "data.max_length=128",
            "error: data.max_length: the checkpoint {ckpt} was trained with 256, this run has 128: ",
        ),
        (
            "model.hidden_size=128",
            "error: model: the checkpoint {ckpt} holds a model of another size (hidden_size 64; this run builds hidden_size 128)",
        ),
    ],
)
def test_changes_that_cannot_be_applied_fail_in_one_line(four_steps, tmp_path, data_cache, override, start):
    out = copy_run(four_steps, tmp_path / "run")
    before = (out / "config.yaml").read_text()
    result = run_train([*overrides(out, data_cache, "trainer.steps=6"), override], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(start.format(ckpt=checkpoint_root(out) / "step_00000004"))
    assert "trainer.resume=never" in lines[0]
    assert (out / "config.yaml").read_text() == before  # nothing of the refused run was written
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_model_of_another_size_without_a_settings_record_is_one_line(four_steps, tmp_path, data_cache):
    """A checkpoint of an earlier version records no settings: the parameter shapes DeepSpeed
    recorded catch the size, instead of its size-mismatch traceback."""
    out = copy_run(four_steps, tmp_path / "run")
    for path in checkpoint_root(out).glob("step_*"):
        (path / resume_settings.SETTINGS).unlink()
        checkpoint.write_manifest(path, alone=True)
    result = run_train([*overrides(out, data_cache, "trainer.steps=6"), "model.hidden_size=128"], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(
        f"error: model: the checkpoint {checkpoint_root(out) / 'step_00000004'} holds a model of another size: "
        "model.embed_tokens.weight is [260, 64] there, [260, 128] in this run's model"
    )
    assert "records no settings" in result.stdout + result.stderr


def test_settings_are_recorded_in_every_checkpoint(tmp_path):
    """What `run_settings` records for the tiny preset (a plan, no model)."""
    from dprope.cli import compose_config
    from dprope.train.config import RunConfig
    from dprope.train.plan import plan_run

    run = RunConfig.from_config(compose_config("train", [f"trainer.output_dir={tmp_path}"]))
    recorded = resume_settings.run_settings(run, plan_run(run, world_size=1))
    assert recorded["rope"]["name"] == run.rope.name and recorded["trainer"]["precision"] == "fp32"
    assert recorded["model"]["architecture"]["hidden_size"] == run.model.hidden_size
    assert json.loads(json.dumps(recorded)) == recorded
