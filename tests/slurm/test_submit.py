"""`scripts/slurm/submit.py` refuses bad requests in one line before asking SLURM anything."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.slurm.conftest import SUBMIT


@pytest.fixture(scope="module")
def submit():
    spec = importlib.util.spec_from_file_location("dprope_submit", SUBMIT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "args,message",
    [
        (["+experiment=llama13b_32k_ours"], "experiment: unknown option 'llama13b_32k_ours'"),
        (["hydra/launcher=nope", "-m"], "hydra/launcher: unknown option 'nope'"),
        (["-p", "gpu"], "sbatch: write -p in its long form"),
        (["--gpus-per-node=0", "trainer.precision=bf16"], "trainer.precision: bf16 needs a CUDA GPU"),
        (["--gpus-per-node=0", "rope.factor=0.5"], "rope.factor: "),
        (["--gpus-per-node=0", "model.foo=1"], "model.foo: unknown key"),
        (
            ["+experiment=tiny_cpu_ours"],  # 8 GPUs by default: 8 x micro 4 > global 8
            "trainer.global_batch_size: 8 is not divisible by micro_batch_size x world size = 4 x 8",
        ),
        (
            ["--nodes=2", "+experiment=llama13b_16k_ours", "trainer.global_batch_size=24"],
            "trainer.global_batch_size: 24 is not divisible by micro_batch_size x world size = 1 x 16",
        ),
        (
            ["--eval", "--gpus-per-node=0", "model.pretrained=./no/such/model"],
            "model.pretrained: no model directory",
        ),
        (["--eval", "-m", "eval=passkey"], "--eval: sweeps run launch/train.py"),
        (
            ["-m", "--partition=gpu", "+experiment=llama7b_8k_ours"],
            "sbatch: --partition=gpu: in a sweep set hydra.launcher",
        ),
        (
            [
                "-m",
                "+experiment=llama7b_8k_ours",
                "+sweep=interpolated_dims",
                "rope.num_interpolated_dims=64,130",
            ],
            "rope.num_interpolated_dims: must be an even number of rotary dimensions in [0, head_dim=128] (got 130)",
        ),
        (
            ["-m", "+experiment=llama7b_8k_ours", "+sweep=num_intervals", "rope.num_intervals=0,90"],
            "rope.num_intervals: ",
        ),
        (
            ["-m", "+experiment=llama7b_8k_pi", "+sweep=num_intervals"],
            "rope.num_intervals: unknown key",
        ),
        (
            [
                "-m",
                "+sweep=interpolated_dims",
                "+experiment=tiny_cpu_ours",
                "rope.num_interpolated_dims=8,12",
            ],
            "trainer.output_dir: 2 sweep points share outputs/train/tiny_cpu_ours",
        ),
    ],
)
def test_bad_request_fails_in_one_line(submit, args, message, monkeypatch, capsys):
    for name in ("SBATCH_GPUS_PER_NODE", "DPROPE_PROCS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    if "+experiment=tiny_cpu_ours" in args and "-m" in args:
        monkeypatch.setenv("DPROPE_GPUS_PER_NODE", "0")
        monkeypatch.setenv("DPROPE_PROCS_PER_NODE", "1")
    with pytest.raises(SystemExit) as exit_info:
        submit.main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def test_sweep_presets_expand_to_the_papers_values(submit):
    for preset, key, values in (
        ("interpolated_dims", "rope.num_interpolated_dims", ["56", "64", "72", "80", "88", "96"]),
        ("num_intervals", "rope.num_intervals", ["90", "180", "360", "720"]),
    ):
        request = submit.parse_args(["-m", "+experiment=llama7b_8k_ours", f"+sweep={preset}"])
        jobs = submit.compose_jobs(request)
        assert [o.split("=")[1] for job, _ in jobs for o in job if o.startswith(f"{key}=")] == values
        assert [run.rope.name for _, (run, _) in jobs] == ["dprope"] * len(values)
        run_dirs = set(submit.check_runs(request, jobs, world_size=8, gpus=8))
        assert run_dirs == {
            f"outputs/sweep/train/llama2-7b_s2.0_{preset}/{num}_{'k' if 'dims' in preset else 'B'}{value}"
            for num, value in enumerate(values)
        }
