"""Configuration: dataclass schemas as the single source of defaults, every Hydra override syntax,
and one-line errors (exit 2) for unknown options, unknown keys and bad values."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dprope.cli import CONFIG_DIR, check_jobs, compose_config, group_options, schemas
from dprope.config import ConfigError, to_typed
from dprope.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def jobs(config_name: str, *argv: str) -> list[list[str]]:
    return [point for point, _ in check_jobs(config_name, list(argv), None)]


def built(config_name: str, *argv: str):
    build = {"train": RunConfig.from_config, "analyze": lambda cfg: to_typed(cfg.rope, "rope")}[config_name]
    return [typed for _, typed in check_jobs(config_name, list(argv), build)]


# ---- one source of truth ----


def _preset_files():
    for group in ("model", "rope", "data", "trainer", "logger", "eval"):
        for name in group_options(group):
            yield group, name


@pytest.mark.parametrize(("group", "name"), list(_preset_files()))
def test_presets_only_override_their_schema(group, name):
    """A preset key that repeats the dataclass default is a second source of truth: refused."""
    raw = yaml.safe_load((CONFIG_DIR / group / f"{name}.yaml").read_text()) or {}
    defaults = raw.pop("defaults", [])
    if any(isinstance(d, str) and d.startswith("/schema/") for d in defaults):
        schema = schemas()[f"rope/{name}" if group == "rope" else group]
        default = OmegaConf.to_container(OmegaConf.structured(schema))
        for key, value in raw.items():
            assert key in default, f"{group}/{name}.yaml: {key} is not a field"
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    assert sub_value != default[key].get(sub), (
                        f"{group}/{name}.yaml: {key}.{sub} repeats the default"
                    )
            else:
                assert value != default[key], f"{group}/{name}.yaml: {key} repeats the default"
    else:  # a preset built on another preset of its group (trainer/tiny on zero3)
        assert all(d in group_options(group) or d == "_self_" for d in defaults)


def test_every_schema_field_is_documented_where_it_is_declared():
    for path, schema in schemas().items():
        cls = schema if isinstance(schema, type) else type(schema)
        for klass in cls.__mro__:
            if not dataclasses.is_dataclass(klass):
                continue
            source = inspect.getsource(klass)
            for field in dataclasses.fields(klass):
                lines = [line for line in source.splitlines() if line.strip().startswith(f"{field.name}:")]
                if lines:  # declared in this class (not inherited)
                    assert "#" in lines[0] or "(" in lines[0], f"{path}: {field.name} has no comment"


def test_the_dataclass_default_reaches_the_composed_config():
    """rope.factor lives in RopeConfig alone; every strategy preset composes to it."""
    from dprope.rope.registry import RopeConfig

    for name in ("pi", "yarn", "dprope", "ntk", "llama3"):
        cfg = compose_config("analyze", [f"rope={name}"])
        assert cfg.rope.factor == RopeConfig.factor == 2.0
    assert compose_config("analyze", ["rope=none"]).rope.factor == 1.0  # the preset's own value


def test_coercion_is_omegaconfs():
    (run,) = built("train", "trainer.steps='7'", "trainer.export=yes")
    assert run.trainer.steps == 7 and run.trainer.export is True
    for bad, field in (("trainer.steps=abc", "trainer.steps"), ("trainer.steps=3.5", "trainer.steps")):
        with pytest.raises(ConfigError) as err:
            built("train", bad)
        assert err.value.field == field


# ---- every override syntax Hydra accepts ----


def test_choice_sweep_over_a_group():
    assert jobs("analyze", "-m", "rope=choice(pi,dprope)") == [["rope=pi"], ["rope=dprope"]]


def test_comma_list_sweep_and_range():
    assert jobs("analyze", "-m", "rope.factor=2,4") == [["rope.factor=2"], ["rope.factor=4"]]
    assert [j[0] for j in jobs("analyze", "-m", "rope.num_intervals=range(90,361,90)")] == [
        f"rope.num_intervals={b}" for b in (90, 180, 270, 360)
    ]


def test_glob_over_a_group_lists_its_presets():
    assert jobs("analyze", "-m", "rope=glob(*,exclude=[none,ntk])") == [
        [f"rope={name}"] for name in ("dprope", "llama3", "pi", "yarn")
    ]


def test_sweeps_multiply_and_keep_fixed_overrides():
    points = jobs("analyze", "-m", "model=llama2_7b", "rope=pi,yarn", "rope.factor=2,4")
    assert len(points) == 4 and all("model=llama2_7b" in p for p in points)


def test_list_value_and_deletion():
    (rope,) = built("analyze", "rope.candidates=[none,pi,yarn]")
    assert rope.candidates == ["none", "pi", "yarn"]
    (job,) = check_jobs("evaluate", ["~data", "model.pretrained=/x"], None)
    assert "data" not in job[1]


def test_sweep_preset_params_expand_first():
    points = jobs("train", "-m", "+experiment=tiny_cpu_ours", "+sweep=num_intervals")
    assert [p[0] for p in points] == [f"rope.num_intervals={b}" for b in (90, 180, 360, 720)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-m", "rope=choice(pi,nope)"],
            "rope: unknown option 'nope' (available: dprope, llama3, none, ntk, pi, yarn)",
        ),
        (["rope=choice(pi,dprope)"], "rope: 'choice(pi,dprope)' is a sweep: add -m (--multirun)"),
        (
            ["-m", "rope.factor=interval(1,4)"],
            "rope.factor: interval(1,4): an interval needs a sampling sweeper",
        ),
        (["rope.atention=1"], "rope.atention: unknown key"),
        (["+rope.atention=1"], "rope.atention: unknown key (known: "),
        (["rope.factor=big"], "rope.factor: Value 'big' of type 'str' could not be converted to Float"),
        (["-m", "rope.factor=2,0.5"], "rope.factor: must be >= 1 (got 0.5) (sweep point rope.factor=0.5)"),
        (["rope=pi", "rope.num_intervals=90"], "rope.num_intervals: unknown key"),
        (["rope.factor=(1"], "overrides: rope.factor=(1: "),
    ],
)
def test_bad_overrides_are_one_config_error(argv, message):
    with pytest.raises(ConfigError) as err:
        built("analyze", *argv)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# ---- as a user runs it ----


def run_entry(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train.py", ["trainer.atention=x"], "error: trainer.atention: unknown key"),
        ("train.py", ["+experiment=nope"], "error: experiment: unknown option 'nope'"),
        ("prepare_data.py", ["trainer.steps=abc"], "error: trainer.steps: Value 'abc'"),
    ],
)
def test_entry_points_fail_in_one_line_with_exit_2(script, args, message):
    proc = run_entry(script, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message)


def test_analysis_sweep_with_choice_runs(tmp_path):
    proc = run_entry(
        "analyze.py",
        "-m",
        "rope=choice(pi,dprope)",
        "model=llama2_7b",
        "analysis.figures=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.parent.name for p in tmp_path.glob("*/analysis.json")) == ["0", "1"]
