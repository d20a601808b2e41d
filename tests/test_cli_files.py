"""Config files a user writes (`--config-dir`): a YAML syntax error and a wrongly typed value in a
preset end the command in one line naming the file or the field, exit 2, like any other bad
input; a good one is composed exactly as Hydra composes it. And a set output directory is the
run directory: nothing lands in ./outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dprope.cli import check_jobs, compose_job, hydra_context, split_command_line
from dprope.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_dir(tmp_path) -> Path:
    root = tmp_path / "my-configs"
    (root / "experiment").mkdir(parents=True)
    (root / "rope").mkdir()
    (root / "experiment" / "unclosed.yaml").write_text("# @package _global_\ntrainer:\n  steps: [1\n")
    (root / "experiment" / "tabs.yaml").write_text("# @package _global_\ntrainer:\n\tsteps: 3\n")
    (root / "experiment" / "typed.yaml").write_text("# @package _global_\ntrainer:\n  steps: abc\n")
    (root / "experiment" / "good.yaml").write_text("# @package _global_\ntrainer:\n  steps: 3\n")
    (root / "rope" / "mine.yaml").write_text("defaults:\n  - /schema/rope/pi@_here_\nfactor: abc\n")
    return root


def test_the_config_dir_flag_is_read_in_both_spellings():
    for argv in (["--config-dir", "d", "a=1"], ["--config-dir=d", "a=1"], ["-cd", "d", "a=1"]):
        line = split_command_line(argv)
        assert (line.config_dir, line.overrides, line.checked) == ("d", ["a=1"], True)
    assert not split_command_line(["--cfg", "job"]).checked  # other flags stay Hydra's


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["+experiment=unclosed"],
            "{dir}/experiment/unclosed.yaml: YAML syntax error at line 4, column 1: "
            "expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)",
        ),
        (
            ["+experiment=tabs"],
            "{dir}/experiment/tabs.yaml: YAML syntax error at line 3, column 1: "
            "found character '\\t' that cannot start any token (while scanning for the next token)",
        ),
        (
            ["+experiment=typed"],
            "trainer.steps: Value 'abc' of type 'str' could not be converted to Integer (in experiment/typed)",
        ),
        (
            ["rope=mine"],
            "rope.factor: Value 'abc' of type 'str' could not be converted to Float (in rope/mine)",
        ),
    ],
    ids=["unclosed-list", "tab", "preset-type", "group-preset-type"],
)
def test_a_bad_config_file_is_one_line(check_entry, config_dir, argv, message):
    code, lines = check_entry("launch/train.py", "--config-dir", str(config_dir), *argv)
    assert (code, lines) == (2, ["error: " + message.format(dir=config_dir)])


def test_a_missing_config_dir_or_a_file(check_entry, tmp_path):
    code, lines = check_entry("launch/train.py", "--config-dir", str(tmp_path / "nowhere"))
    assert (code, lines) == (2, [f"error: --config-dir: no directory at {tmp_path / 'nowhere'}"])
    (tmp_path / "file.yaml").write_text("a: 1\n")
    code, lines = check_entry("launch/analyze.py", f"--config-dir={tmp_path / 'file.yaml'}")
    assert (code, lines) == (2, [f"error: --config-dir: {tmp_path / 'file.yaml'} is a file, not a directory"])


def test_a_good_config_dir_composes_as_hydra_does(config_dir):
    ((_, run),) = check_jobs(
        "train", ["--config-dir", str(config_dir), "+experiment=good"], RunConfig.from_config
    )
    assert run.trainer.steps == 3
    ((_, runs),) = check_jobs(
        "train", ["-m", "-cd", str(config_dir), "+experiment=good"], RunConfig.from_config
    )
    assert runs.trainer.steps == 3


def test_the_process_ends_in_one_line_on_a_syntax_error(config_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch" / "train.py"),
            "--config-dir",
            str(config_dir),
            "+experiment=unclosed",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {config_dir}/experiment/unclosed.yaml: YAML syntax error at line 4, column 1: "
        "expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"
    ]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "config_name,key,default",
    [
        ("analyze", "analysis.output_dir", "outputs/analyze/llama2-7b_dprope_s2.0/"),
        ("evaluate", "eval.output_dir", "outputs/eval/llama2-7b/"),
        ("precision", "precision.output_dir", "outputs/precision/tiny/"),
    ],
)
def test_a_set_output_dir_is_the_run_directory(config_name, key, default, tmp_path):
    with hydra_context(config_name):
        unset = compose_job(config_name, [])
        chosen = compose_job(config_name, [f"{key}={tmp_path / 'mine'}"])
    assert OmegaConf.select(unset, "hydra.run.dir").startswith(default)
    assert OmegaConf.select(chosen, "hydra.run.dir") == str(tmp_path / "mine")


def test_analysis_with_an_output_dir_writes_nothing_in_the_current_directory(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch" / "analyze.py"),
            "model=llama2_7b",
            "rope=pi",
            "analysis.figures=false",
            f"analysis.output_dir={out}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(work.iterdir()) == []  # no outputs/analyze/<time>/.hydra here
    assert (out / "analysis.json").is_file() and (out / ".hydra" / "config.yaml").is_file()
