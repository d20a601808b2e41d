"""A two-node job on one machine, through the launch commands the batch script builds.

Node launchers as `train.sbatch` starts them on a cluster, two "nodes" on localhost: with
DPROPE_LAUNCHER=torchrun, each node runs the command `dprope_torchrun` (scripts/slurm/common.sh)
builds, and the two torchrun agents meet in the c10d rendezvous at the job's address, which
numbers them; with the default srun launcher, each task starts `launch/train.py` with the
variables srun sets (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) and the rendezvous address
`dprope_environment` exports. The first trains and checkpoints, the second resumes from that
checkpoint and continues with the same losses.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.conftest import ROOT, free_port
from tests.train.conftest import TRAIN, read_metrics, small_run, train_env

pytestmark = pytest.mark.slow

STEPS = 8
COMMON = ROOT / "scripts" / "slurm" / "common.sh"


def overrides(output_dir: Path, data_cache: Path, *extra: str) -> list[str]:
    return small_run(output_dir, data_cache, f"trainer.steps={STEPS}", "trainer.save_every=4", *extra)


def run_nodes(commands: list[list[str]], envs: list[dict], timeout: int = 600) -> list[tuple[int, str]]:
    """Start every node's command at once; wait for all; (exit code, output) of each."""
    processes = [
        subprocess.Popen(c, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c, e in zip(commands, envs, strict=True)
    ]
    try:
        return [(p.wait(timeout=timeout), p.stdout.read()) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def torchrun_node_env(port: int) -> dict:
    """What `dprope_environment` sets on each node of a 2-node, 1-process-per-node CPU job."""
    return train_env(
        DPROPE_ROOT=str(ROOT),
        PYTHON=sys.executable,
        NUM_NODES="2",
        PROCS_PER_NODE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        SLURM_JOB_ID="4242",
    )


def srun_task_env(rank: int, port: int) -> dict:
    """What srun and `dprope_environment` give task ``rank`` of 2 tasks on 2 nodes."""
    return train_env(
        SLURM_PROCID=str(rank),
        SLURM_NTASKS="2",
        SLURM_LOCALID="0",
        SLURM_NODEID=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


def test_two_node_job_trains_checkpoints_and_resumes(tmp_path, data_cache):
    first, second = tmp_path / "first", tmp_path / "second"
    # every node runs the same torchrun command, built by the batch script's own function
    node = ["bash", "-c", f'source "{COMMON}"; dprope_torchrun train "$@"; exec "${{TORCHRUN[@]}}"', "node"]
    port = free_port()
    results = run_nodes([[*node, *overrides(first, data_cache)]] * 2, [torchrun_node_env(port)] * 2)
    for code, output in results:
        assert code == 0, output[-3000:]
    console = "".join(output for _, output in results)
    assert "world 2 x micro 2 x accumulation 1" in console
    assert [r["step"] for r in read_metrics(first)] == list(range(1, STEPS + 1))
    saved = first / "checkpoints" / "step_00000004"
    assert len(list(saved.glob("zero_pp_rank_*_model_states.pt"))) == 2

    # the default launcher: srun starts one task per node, which joins at MASTER_ADDR:MASTER_PORT
    port = free_port()
    task = [sys.executable, str(TRAIN), *overrides(second, data_cache, f"trainer.resume={saved}")]
    results = run_nodes([task, task], [srun_task_env(0, port), srun_task_env(1, port)])
    for code, output in results:
        assert code == 0, output[-3000:]
    assert "resumed from" in results[0][1] and "at step 4" in results[0][1]
    assert [r["step"] for r in read_metrics(second)] == [5, 6, 7, 8]
    assert [r["loss"] for r in read_metrics(second)] == [r["loss"] for r in read_metrics(first)][4:]
