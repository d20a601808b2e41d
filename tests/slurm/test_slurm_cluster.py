"""The SLURM side on a real one-node cluster (see conftest.py), on CPU: a batch job that trains and
exports, a job signalled mid-run that is requeued and resumes to the same losses as an
uninterrupted run (with srun and with torchrun starting the processes), an evaluation job, a
sweep through the submitit launcher collected into a table, and bad submissions refused up front.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm.conftest import COLLECT, ROOT, SUBMIT, TRAIN_SBATCH, wait_until

pytestmark = pytest.mark.slow

STEPS = 20
JOB_TIMEOUT = 300


def small_run(cache: Path) -> list[str]:
    """20 steps of 4 x 1024 tokens, ~0.3 s a step on two CPU processes."""
    return [
        f"data.cache_dir={cache}",
        "data.max_length=1024",
        f"trainer.steps={STEPS}",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=2",
        "trainer.save_every=8",
    ]


def run_overrides(output_dir: Path, cache: Path) -> list[str]:
    """The tiny DPRoPE preset, shrunk to `small_run`."""
    return ["+experiment=tiny_cpu_ours", f"trainer.output_dir={output_dir}", *small_run(cache)]


def losses(output_dir: Path) -> list[float]:
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data_cache(slurm_cluster, tmp_path_factory) -> Path:
    """The packed data of every job here, built once beforehand, as on a cluster's login node."""
    cache = tmp_path_factory.mktemp("data-cache")
    # one tokenizing process, nothing forked; num_proc is not part of the cache key, so the jobs find it
    overrides = [*run_overrides(cache / "unused", cache), "data.num_proc=1"]
    slurm_cluster.run(sys.executable, str(ROOT / "launch" / "prepare_data.py"), *overrides, timeout=600)
    return cache


@pytest.fixture(scope="module")
def reference_run(slurm_cluster, tmp_path_factory, data_cache) -> Path:
    """`sbatch scripts/slurm/train.sbatch` on two CPU processes, uninterrupted."""
    base = tmp_path_factory.mktemp("reference")
    out = base / "run"
    log = base / "job.out"
    job = slurm_cluster.sbatch(
        "--gpus-per-node=0",
        f"--output={log}",
        str(TRAIN_SBATCH),
        *run_overrides(out, data_cache),
        env=slurm_cluster.env(DPROPE_PROCS_PER_NODE="2"),
    )
    info = slurm_cluster.wait_job(job, JOB_TIMEOUT, log)
    assert info["JobState"] == "COMPLETED", slurm_cluster.diagnose(job, log)
    return out


def test_batch_job_trains_on_two_processes_and_exports(reference_run):
    log = (reference_run.parent / "job.out").read_text()
    assert "world 2 x micro 2 x accumulation 1" in log
    assert "training exited with 0" in log
    assert len(losses(reference_run)) == STEPS
    assert (reference_run / "hf" / "model.safetensors").is_file()
    assert (
        json.loads((reference_run / "hf" / "config.json").read_text())["rope_parameters"]["rope_type"]
        == "longrope"
    )


@pytest.mark.parametrize("launcher", ["srun", "torchrun"])
def test_signalled_job_is_requeued_and_resumes_to_the_same_losses(
    launcher, slurm_cluster, reference_run, tmp_path, data_cache
):
    out = tmp_path / "run"
    log = tmp_path / "job.out"
    job = slurm_cluster.sbatch(
        "--gpus-per-node=0",
        f"--output={log}",
        str(TRAIN_SBATCH),
        *run_overrides(out, data_cache),
        env=slurm_cluster.env(DPROPE_PROCS_PER_NODE="2", DPROPE_LAUNCHER=launcher),
    )

    def running_a_few_steps():
        assert slurm_cluster.job(job).get("JobState") in ("PENDING", "RUNNING"), slurm_cluster.diagnose(
            job, log
        )
        return len(losses(out)) >= 3

    wait_until(
        running_a_few_steps,
        JOB_TIMEOUT,
        "three steps",
        interval=0.2,
        diagnose=lambda: slurm_cluster.diagnose(job, log),
    )
    # what SLURM does before the time limit with --signal=B:USR1@600: signal the batch script only
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job)
    info = slurm_cluster.wait_job(job, 2 * JOB_TIMEOUT, log)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED", slurm_cluster.diagnose(job, log)
    assert info["Restarts"] == "1", slurm_cluster.diagnose(job, log)
    assert "USR1: passing it on" in text and "requeueing (restart 1)" in text
    assert "resumed from" in text
    assert losses(out) == losses(reference_run)
    assert (out / "hf" / "model.safetensors").is_file()


def test_eval_job_through_the_submit_script(slurm_cluster, reference_run, tmp_path):
    results = tmp_path / "results"
    log = tmp_path / "eval.out"
    submitted = slurm_cluster.run(
        sys.executable,
        str(SUBMIT),
        "--eval",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        f"--output={log}",
        "eval=passkey",
        "model=tiny",
        f"model.pretrained={reference_run / 'hf'}",
        "model.tokenizer=null",
        "eval.passkey.lengths=[512]",
        "eval.passkey.depths=[0.5]",
        "eval.passkey.trials=1",
        "eval.progress=false",
        "eval.plots=false",
        f"eval.output_dir={results}",
    )
    job = submitted.stdout.strip().split()[-1]
    info = slurm_cluster.wait_job(job, JOB_TIMEOUT, log)
    assert info["JobState"] == "COMPLETED", slurm_cluster.diagnose(job, log)
    report = json.loads((results / "results.json").read_text())
    assert "passkey" in report["benchmarks"]


def test_sweep_through_the_submitit_launcher_is_collected(
    slurm_cluster, submitit_launcher, tmp_path, data_cache
):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(SUBMIT),
        "-m",
        "+experiment=tiny_cpu_ours",
        "+sweep=interpolated_dims",
        "rope.num_interpolated_dims=8,12",  # k within the tiny head_dim of 16
        f"hydra.sweep.dir={sweep}",
        *small_run(data_cache),  # the data of the other jobs, prepared above
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=20",
    ]
    start = time.monotonic()
    try:
        result = subprocess.run(
            command,
            env=slurm_cluster.env(),
            capture_output=True,
            text=True,
            timeout=2 * JOB_TIMEOUT,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        logs = tmp_path / "sweep" / ".submitit" / "*" / "*.err"
        pytest.fail(
            f"sweep still running after {time.monotonic() - start:.0f} s\n{slurm_cluster.diagnose(log=logs)}"
        )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "checked 2 job(s)" in result.stdout

    collected = subprocess.run(
        [sys.executable, str(COLLECT), str(sweep)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert collected.returncode == 0, collected.stderr[-3000:]
    table = (sweep / "sweep.md").read_text().splitlines()
    assert table[0].startswith(
        "| run | rope.num_interpolated_dims | steps | final loss | disturbance | done |"
    )
    rows = [line.split(" | ") for line in table[2:]]
    assert [row[1] for row in rows] == ["8", "12"]
    assert all(row[2] == f"{STEPS}/{STEPS}" and row[-1].startswith("True") for row in rows)
    assert (sweep / "sweep.png").stat().st_size > 0
    for run in ("0_k8", "1_k12"):
        assert (sweep / run / "hf" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args,env,message",
    [
        (["--gpus-per-node=0", "+experiment=tiny_cpu_ours"], {"SBATCH_PARTITION": ""}, "error: slurm: "),
        (
            ["--gpus-per-node=0", "+experiment=tiny_cpu_ours"],
            {"DPROPE_REQUIRE_ACCOUNT": "1"},
            "error: account: ",
        ),
        (["--gpus-per-node=0", "+experiment=llama13b_32k_ours"], {}, "error: experiment: unknown option"),
        (
            ["--partition=nope", "--gpus-per-node=0", "+experiment=tiny_cpu_ours"],
            {},
            "error: slurm: invalid partition",
        ),
        (
            [
                "-m",
                "+experiment=tiny_cpu_ours",
                "+sweep=interpolated_dims",
                "rope.num_interpolated_dims=8,18",
            ],
            {"DPROPE_GPUS_PER_NODE": "0", "DPROPE_PROCS_PER_NODE": "1"},
            "error: rope.num_interpolated_dims: ",
        ),
    ],
)
def test_bad_submission_fails_in_one_line_and_queues_nothing(slurm_cluster, args, env, message):
    before = slurm_cluster.jobs()
    environment = slurm_cluster.env(**env)
    environment = {k: v for k, v in environment.items() if v != ""}
    result = slurm_cluster.run(sys.executable, str(SUBMIT), *args, env=environment, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-2000:]
    if message == "error: slurm: ":
        assert "partition" in lines[0]
    assert slurm_cluster.jobs() == before
