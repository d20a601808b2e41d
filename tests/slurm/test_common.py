"""The batch scripts' shell helpers, run by bash without a cluster."""

from __future__ import annotations

import subprocess

from tests.slurm.conftest import ROOT

COMMON = ROOT / "scripts" / "slurm" / "common.sh"


def run_bash(script: str, **env: str) -> str:
    base = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node[1-2]"}
    result = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{COMMON}"; {script}'],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_job_log_lists_the_nccl_settings_passed_on():
    variables = dict(
        NUM_NODES="2", PROCS_PER_NODE="8", GPUS_PER_NODE="8", MASTER_ADDR="node1", MASTER_PORT="15007"
    )
    variables["PYTHON"] = "python"
    out = run_bash("dprope_header train", NCCL_SOCKET_IFNAME="ib0", TORCH_NCCL_BLOCKING_WAIT="1", **variables)
    assert "NCCL settings passed on: NCCL_SOCKET_IFNAME=ib0 TORCH_NCCL_BLOCKING_WAIT=1" in out
    assert "NCCL settings passed on: none" in run_bash("dprope_header train", **variables)


def test_torchrun_command_is_the_same_on_every_node():
    out = run_bash(
        'dprope_torchrun train trainer.steps=5; printf "%s\\n" "${TORCHRUN[@]}"',
        DPROPE_ROOT="/repo",
        PYTHON="python",
        NUM_NODES="2",
        PROCS_PER_NODE="8",
        MASTER_ADDR="node1",
        MASTER_PORT="15007",
    )
    args = out.splitlines()
    assert args[:3] == ["python", "-m", "torch.distributed.run"]
    assert "--nnodes=2" in args and "--nproc-per-node=8" in args
    assert "--rdzv-backend=c10d" in args and "--rdzv-endpoint=node1:15007" in args and "--rdzv-id=7" in args
    assert args[-2:] == ["/repo/launch/train.py", "trainer.steps=5"]
