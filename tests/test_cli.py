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

from dprope.cli import CONFIG_DIR, check_jobs, compose_config, group_options, root_schemas, schemas
from dprope.config import ConfigError, to_typed
from dprope.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
# every entry point and the config its root schema belongs to
ENTRY_POINTS = {
    "launch/train.py": "train",
    "launch/prepare_data.py": "train",
    "launch/eval.py": "evaluate",
    "launch/analyze.py": "analyze",
    "launch/precision.py": "precision",
    "launch/reproduce.py": "reproduction",
    "scripts/slurm/submit.py": "train",
}


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


# ---- root schemas: no top-level key outside them ----


def known(config_name: str) -> str:
    return ", ".join(sorted(f.name for f in dataclasses.fields(root_schemas()[config_name])))


@pytest.mark.parametrize("config_name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_config_composes_to_the_keys_of_its_root_schema(config_name):
    fields = {f.name: f for f in dataclasses.fields(root_schemas()[config_name])}
    keys = set(compose_config(config_name).keys())
    assert keys <= set(fields)
    assert all("None" in str(fields[name].type) for name in set(fields) - keys)  # only optional ones absent


@pytest.mark.parametrize("script", list(ENTRY_POINTS))
def test_an_unknown_top_level_key_is_refused_by_every_entry_point(script, check_entry):
    config_name = ENTRY_POINTS[script]
    for argv, key in (
        (["+foo=1"], "foo"),
        (["+trainer_typo.steps=3"], "trainer_typo"),
        (["-m", "+foo=1,2"], "foo"),
    ):
        if script.endswith(("eval.py", "precision.py", "reproduce.py")) and "-m" in argv:
            continue  # a single job is enough where sweeps share the train path
        assert check_entry(script, *argv) == (2, [f"error: {key}: unknown key (known: {known(config_name)})"])


def test_a_section_of_another_entry_point_is_unknown():
    """The issue's example: an analysis has no trainer (and reports the first unknown key)."""
    for argv, key in (
        (["+foo=1", "+trainer.atention=1", "model=llama2_7b"], "foo"),
        (["+trainer.atention=1", "model=llama2_7b"], "trainer"),
        (["+logger.kind=wandb"], "logger"),
    ):
        with pytest.raises(ConfigError) as err:
            jobs("analyze", *argv)
        assert str(err.value) == f"{key}: unknown key (known: analysis, model, rope)"
    with pytest.raises(ConfigError, match="^trainer: unknown key"):
        jobs("evaluate", "+trainer.steps=3")


def test_a_sweep_preset_shared_with_training_leaves_its_training_sections_unread(capsys):
    """+sweep presets set trainer.output_dir and data.num_proc for the training runs; an analysis
    sweep over the same preset takes them with a note, but not a trainer key the user adds."""
    points = jobs("analyze", "-m", "model=llama2_7b", "+sweep=num_intervals")
    assert [p[0] for p in points] == [f"rope.num_intervals={b}" for b in (90, 180, 360, 720)]
    assert "note: +sweep=num_intervals sets trainer, data for training runs" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="^trainer: unknown key"):
        jobs("analyze", "-m", "model=llama2_7b", "+sweep=num_intervals", "+trainer.steps=3")


# ---- as a user runs it ----


def run_entry(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("script", "args", "key"),
    [  # the two examples, and submit.py, whose check is its own (the others share train.py's)
        ("launch/train.py", ["+trainer_typo.steps=3"], "trainer_typo"),
        ("launch/analyze.py", ["+foo=1", "+trainer.atention=1", "model=llama2_7b"], "foo"),
        ("scripts/slurm/submit.py", ["--dry-run", "+trainer_typo.steps=3"], "trainer_typo"),
    ],
)
def test_an_unknown_top_level_key_ends_the_process_in_one_line_before_any_work(script, args, key, tmp_path):
    run_dir = tmp_path / "run"
    where = "trainer.output_dir" if ENTRY_POINTS[script] == "train" else "hydra.run.dir"
    proc = run_entry(script, *args, f"{where}={run_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    expected = f"error: {key}: unknown key (known: {known(ENTRY_POINTS[script])})"
    assert proc.stderr.strip().splitlines() == [expected]
    assert not run_dir.exists()  # nothing was started


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("launch/train.py", ["trainer.atention=x"], "error: trainer.atention: unknown key"),
        ("launch/train.py", ["+experiment=nope"], "error: experiment: unknown option 'nope'"),
        ("launch/prepare_data.py", ["trainer.steps=abc"], "error: trainer.steps: Value 'abc'"),
    ],
)
def test_entry_points_fail_in_one_line_with_exit_2(script, args, message, check_entry):
    code, lines = check_entry(script, *args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(message), lines


def test_analysis_sweep_with_choice_runs(tmp_path):
    proc = run_entry(
        "launch/analyze.py",
        "-m",
        "rope=choice(pi,dprope)",
        "model=llama2_7b",
        "analysis.figures=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.parent.name for p in tmp_path.glob("*/analysis.json")) == ["0", "1"]
