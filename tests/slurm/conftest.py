"""A real one-node SLURM cluster on localhost for the tests, and helpers to drive it.

The fixture installs Debian's `slurm-wlm` and `munge` when they are missing (as root), starts
munged, slurmctld and slurmd in the foreground with their keys, state, spool and logs in a
temporary directory and ports of their own, and stops them afterwards, also when a test fails.
The node has this machine's CPUs and memory; its one partition is not a default partition, so a
submission without a partition is refused as on clusters that require one.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"
SUBMIT = ROOT / "scripts" / "slurm" / "submit.py"
COLLECT = ROOT / "scripts" / "collect_sweep.py"
PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo", "srun")
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def ensure_slurm_installed() -> None:
    """Install slurm-wlm and munge with apt when missing; skip only where that cannot be done."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (slurmd runs jobs as any user)")
    missing = [name for name in (*DAEMONS, *CLIENTS) if which(name) is None]
    if not missing:
        return
    if which("apt-get") is None:
        pytest.skip(f"{', '.join(missing)} missing and no apt-get to install slurm-wlm and munge")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    still = [name for name in (*DAEMONS, *CLIENTS) if which(name) is None]
    assert not still, f"installed slurm-wlm and munge, yet {still} are missing"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_resources() -> tuple[int, int]:
    """This machine's CPUs and memory (MiB) as slurmd sees them; memory kept 5% under, so the
    node is never drained for having less than configured."""
    line = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    cpus = int(re.search(r"CPUs=(\d+)", line).group(1))
    memory = int(re.search(r"RealMemory=(\d+)", line).group(1))
    return cpus, int(memory * 0.95)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5, diagnose=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}")
        time.sleep(interval)


class Cluster:
    """The daemons of a one-node cluster, and the SLURM commands of the tests."""

    def __init__(self, base: Path):
        self.base = base
        self.conf = base / "slurm.conf"
        self.logs = base / "log"
        self.processes: dict[str, subprocess.Popen] = {}
        self.cpus, self.memory = node_resources()

    # ---- start and stop ----

    def write_config(self) -> None:
        for sub in ("state", "spool", "log", "run"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        key = self.base / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        b = self.base
        self.conf.write_text(
            "\n".join(
                [
                    f"ClusterName=dprope{os.getpid()}",
                    "SlurmctldHost=localhost",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # cred_expire also sets how long a requeued job waits before it may start again
                    f"AuthInfo=socket={b}/run/munge.socket,cred_expire=10",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    f"StateSaveLocation={b}/state",
                    f"SlurmdSpoolDir={b}/spool",
                    f"SlurmctldPidFile={b}/run/slurmctld.pid",
                    f"SlurmdPidFile={b}/run/slurmd.pid",
                    f"SlurmctldLogFile={b}/log/slurmctld.log",
                    f"SlurmdLogFile={b}/log/slurmd.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/backfill",
                    "AccountingStorageType=accounting_storage/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "ReturnToService=2",
                    "MinJobAge=900",  # finished jobs stay visible to `scontrol show job`
                    "KillWait=30",
                    f"DefMemPerCPU={self.memory // self.cpus}",
                    f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory} State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes=localhost MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _start(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.stdout", "w")
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )
        log.close()

    def _alive(self, name: str) -> bool:
        process = self.processes[name]
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}\n{self.diagnose()}")
        return True

    def start(self) -> None:
        self.write_config()
        b = self.base
        self._start(
            "munged",
            [
                which("munged"),
                "--foreground",
                "--force",
                f"--socket={b}/run/munge.socket",
                f"--key-file={b}/munge.key",
                f"--pid-file={b}/run/munged.pid",
                f"--log-file={b}/log/munged.log",
                f"--seed-file={b}/run/munge.seed",
            ],
        )
        wait_until(lambda: self._alive("munged") and (b / "run" / "munge.socket").exists(), 30, "munged")
        self._start("slurmctld", [which("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        wait_until(
            lambda: self._alive("slurmctld") and self.run("scontrol", "ping", check=False).stdout.count("UP"),
            60,
            "slurmctld",
            diagnose=self.diagnose,
        )
        self._start("slurmd", [which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        wait_until(
            lambda: (
                self._alive("slurmd")
                and self.run("sinfo", "-h", "-n", "localhost", "-o", "%T", check=False).stdout.strip()
                == "idle"
            ),
            60,
            "slurmd to register an idle node",
            diagnose=self.diagnose,
        )

    def stop(self) -> None:
        """Cancel every job of this cluster, wait for them to leave, stop the daemons."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--partition", PARTITION, check=False)
            try:
                wait_until(
                    lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 90, "jobs to end"
                )
            except AssertionError:
                pass  # the daemons are stopped below all the same
        for name in reversed(DAEMONS):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    # ---- commands ----

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for SLURM commands and jobs: no variables of an outer job or
        process group, this cluster's config, CPU training, one thread per process."""
        outer = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "DPROPE_")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(outer)
            and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        }
        env.update(
            PATH=SBIN_PATH,
            SLURM_CONF=str(self.conf),
            SBATCH_PARTITION=PARTITION,
            DS_ACCELERATOR="cpu",
            OMP_NUM_THREADS="1",
            WANDB_MODE="disabled",
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            DPROPE_PYTHON=sys.executable,
        )
        env.update(extra)
        return env

    def run(self, *command: str, env: dict | None = None, check: bool = True, timeout: float = 60):
        result = subprocess.run(
            command, env=env or self.env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr[-2000:]}"
            )
        return result

    def sbatch(self, *args: str, env: dict | None = None) -> str:
        return self.run("sbatch", "--parsable", *args, env=env).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); sacct is not needed."""
        text = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def jobs(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()

    def wait_job(self, job_id: str, timeout: float, log: Path | None = None) -> dict[str, str]:
        """Wait until the job has finished (a requeued job: its last run)."""

        def finished():
            info = self.job(job_id)
            return info if info.get("JobState") in FINISHED else None

        return wait_until(
            finished, timeout, f"job {job_id}", interval=1, diagnose=lambda: self.diagnose(job_id, log)
        )

    def diagnose(self, job_id: str | None = None, log: Path | None = None) -> str:
        parts = []
        if job_id is not None:
            parts.append(f"job: {self.job(job_id)}")
        if log is not None:
            for path in sorted(log.parent.glob(log.name)) if "*" in log.name else [log]:
                if path.is_file():
                    parts.append(f"--- {path.name} ---\n{path.read_text()[-4000:]}")
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.logs / name
            if path.is_file():
                parts.append(f"--- {name} ---\n{path.read_text()[-1500:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    ensure_slurm_installed()
    # a short base path: munge's socket path must fit in a UNIX socket address (108 bytes)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def submitit_launcher():
    """hydra-submitit-launcher, installed with pip when missing (pinned; torch left untouched)."""
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        import submitit  # noqa: F401
    except ImportError:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-build-isolation",
            "hydra-submitit-launcher==1.2.0",
            "submitit==1.5.4",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"pip install of the submitit launcher failed:\n{result.stderr[-3000:]}")
