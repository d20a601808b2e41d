"""Submit a training run, an evaluation or a sweep to SLURM after checking it, so that a bad request
fails here, in one line, instead of after the job has waited in the queue.

    python scripts/slurm/submit.py +experiment=llama13b_16k_ours               # train.sbatch, 1 node x 8 GPUs
    python scripts/slurm/submit.py --nodes=2 --time=2-00:00:00 +experiment=llama13b_16k_ours
    python scripts/slurm/submit.py --eval eval=passkey model=llama2_13b model.pretrained=<dir>
    python scripts/slurm/submit.py -m +experiment=llama7b_8k_ours +sweep=interpolated_dims  # hydra/launcher=slurm

Arguments starting with `--` are sbatch options, in their long form (`--partition=gpu`,
`--account=abc`, `--gpus-per-node=4`); the others are Hydra overrides. `--eval` submits
scripts/slurm/eval.sbatch instead of train.sbatch, `-m` runs the sweep through the submitit
launcher (cluster settings then come from `hydra.launcher.*` and SBATCH_* variables), `--dry-run`
checks and prints the command without submitting (also where sbatch is not installed: SLURM's own
check is then skipped, with a note).

Environment: DPROPE_GPUS_PER_NODE (training and sweeps; default 8, 0 = CPU only) and
DPROPE_PROCS_PER_NODE (default: one per GPU), SBATCH_* variables as sbatch reads them, and
DPROPE_SETUP and the other settings of scripts/slurm/common.sh, which the jobs read.

Checks, in order, each ending the submission with `error: <field>: <message>` and exit code 2:
every Hydra override composes (the experiment and every group option exist, every key exists);
every sweep point builds the typed configs the entry point builds, and the strategy, the sequence
length and the global batch fit the model and the requested processes; the runs of a sweep write
to distinct directories; SLURM accepts the request (`sbatch --test-only`: partition, account,
QOS, GPUs, time limit); a partition or account that the site requires (DPROPE_REQUIRE_PARTITION=1,
DPROPE_REQUIRE_ACCOUNT=1, for rules SLURM cannot tell) is given.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from dprope.cli import check_jobs, fail  # noqa: E402
from dprope.config import ConfigError  # noqa: E402

SCRIPTS = {
    "train": ROOT / "scripts" / "slurm" / "train.sbatch",
    "eval": ROOT / "scripts" / "slurm" / "eval.sbatch",
}
CONFIG_NAMES = {"train": "train", "eval": "evaluate"}


@dataclass
class Request:
    entry: str = "train"  # train | eval
    multirun: bool = False
    dry_run: bool = False
    sbatch: list[str] = field(default_factory=list)  # sbatch options, long form
    overrides: list[str] = field(default_factory=list)  # Hydra overrides


def parse_args(argv: list[str]) -> Request:
    request = Request()
    for arg in argv:
        if arg == "--eval":
            request.entry = "eval"
        elif arg in ("-m", "--multirun"):
            request.multirun = True
        elif arg == "--dry-run":
            request.dry_run = True
        elif arg.startswith("--"):
            request.sbatch.append(arg)
        elif arg.startswith("-"):
            fail(f"sbatch: write {arg} in its long form with '=' (for example --partition=gpu)")
        else:
            request.overrides.append(arg)
    if request.multirun and request.entry == "eval":
        fail("--eval: sweeps run launch/train.py; submit evaluations one by one")
    if request.multirun and request.sbatch:
        fail(f"sbatch: {request.sbatch[0]}: in a sweep set hydra.launcher.<name>=... or SBATCH_* variables")
    return request


# ---- the Hydra side: compose every job, build the typed configs ----


def launcher_of(cfg) -> dict:
    """The job's `hydra.launcher` settings, resolved (the sweep's sbatch request)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True) if "launcher" in cfg.hydra else {}


def build_job(entry: str):
    """The entry point's own builder (one per entry point), plus the launcher settings."""
    if entry == "train":
        from dprope.train.config import RunConfig

        return lambda cfg: (RunConfig.from_config(cfg), launcher_of(cfg))
    from dprope.eval.job import EvalJob

    return lambda cfg: (EvalJob.from_config(cfg), launcher_of(cfg))


def compose_jobs(request: Request) -> list[tuple[list[str], tuple]]:
    """Every job of the request, composed and built as its entry point will (one-line errors)."""
    argv = (["-m"] if request.multirun else []) + request.overrides
    try:
        return check_jobs(CONFIG_NAMES[request.entry], argv, build_job(request.entry))
    except ConfigError as err:
        fail(str(err))


def check_train(run, world_size: int, gpus_per_node: int) -> str:
    """The checks the trainer makes before it touches a device; returns the run directory."""
    from dprope.train.engine import check_pretrained

    check_pretrained(run.model)
    run.trainer.accumulation_steps(world_size)
    if run.trainer.precision == "bf16" and gpus_per_node == 0:
        raise ConfigError(
            "trainer.precision", "bf16 needs a CUDA GPU; the job requests none (use fp32 or auto)"
        )
    return run.trainer.output_dir


# ---- the SLURM side: what the job asks for, and whether the cluster takes it ----


def option(options: list[str], *names: str) -> str | None:
    """The value of the last `--name=value` among ``options``."""
    value = None
    for arg in options:
        key, _, rest = arg.partition("=")
        if key in names:
            value = rest
    return value


def script_defaults(script: Path) -> list[str]:
    return [
        line.split(None, 1)[1].strip()
        for line in script.read_text().splitlines()
        if line.startswith("#SBATCH ")
    ]


def as_int(value: str | None, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        fail(f"sbatch: {name}: expected a number (got {value!r})")


def launcher_options(launcher: dict) -> list[str]:
    """The sbatch options the submitit launcher will use, for `sbatch --test-only`."""
    names = {
        "partition": "partition",
        "account": "account",
        "qos": "qos",
        "constraint": "constraint",
        "nodes": "nodes",
        "gpus_per_node": "gpus-per-node",
        "tasks_per_node": "ntasks-per-node",
        "cpus_per_task": "cpus-per-task",
        "timeout_min": "time",
    }
    options = [f"--{flag}={launcher[key]}" for key, flag in names.items() if launcher.get(key) is not None]
    if launcher.get("mem_gb") is not None:
        options.append(f"--mem={launcher['mem_gb']}G")
    for key, value in (launcher.get("additional_parameters") or {}).items():
        options.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    return options


def check_cluster(options: list[str], script: Path | None, dry_run: bool = False) -> None:
    """The site's own rules, then SLURM's verdict on the request without queueing it (a dry run
    on a machine without sbatch skips that verdict, with a note, and still prints the command)."""
    required = {"partition": ("--partition", "SBATCH_PARTITION"), "account": ("--account", "SBATCH_ACCOUNT")}
    for name, (flag, variable) in required.items():
        if os.environ.get(f"DPROPE_REQUIRE_{name.upper()}") == "1" and not (
            option(options, flag) or os.environ.get(variable)
        ):
            fail(f"{name}: this cluster requires one: pass {flag}=... or set {variable}")
    target = [str(script)] if script else ["--wrap=true"]
    try:
        result = subprocess.run(
            ["sbatch", "--test-only", *options, *target], capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        if dry_run:
            print("note: sbatch not found: SLURM's own check (sbatch --test-only) skipped", file=sys.stderr)
            return
        fail("slurm: sbatch not found: submit from a machine of the cluster")
    if result.returncode != 0:
        lines = [line.removeprefix("sbatch: error: ") for line in result.stderr.strip().splitlines()]
        message = lines[0] if lines else f"sbatch --test-only exited with {result.returncode}"
        fail(f"slurm: {message} (options: {' '.join(options) or 'none'}; SBATCH_* variables apply too)")


def resources(request: Request, launcher: dict) -> tuple[list[str], int, int, int]:
    """The sbatch options of the request, and the nodes, processes and GPUs per node they give."""
    if request.multirun:
        options = launcher_options(launcher)
        nodes = as_int(option(options, "--nodes"), "nodes")
        gpus = as_int(option(options, "--gpus-per-node") or 0, "gpus-per-node")
        return options, nodes, as_int(option(options, "--ntasks-per-node"), "ntasks-per-node"), gpus
    options = list(request.sbatch)
    if (
        request.entry == "train"
        and os.environ.get("DPROPE_GPUS_PER_NODE")
        and not option(options, "--gpus-per-node")
    ):
        options.append(f"--gpus-per-node={os.environ['DPROPE_GPUS_PER_NODE']}")
    defaults = script_defaults(SCRIPTS[request.entry])
    nodes = as_int(option(options, "--nodes") or option(defaults, "--nodes") or 1, "nodes")
    gpus = as_int(
        option(options, "--gpus-per-node")
        or os.environ.get("SBATCH_GPUS_PER_NODE")
        or option(defaults, "--gpus-per-node")
        or 0,
        "gpus-per-node",
    )
    procs = as_int(os.environ.get("DPROPE_PROCS_PER_NODE") or max(gpus, 1), "DPROPE_PROCS_PER_NODE")
    return options, nodes, procs, gpus


def check_runs(
    request: Request, jobs: list[tuple[list[str], tuple]], world_size: int, gpus: int
) -> list[str]:
    """Every training job against the requested processes; returns the run directories."""
    if request.entry != "train":
        for _, (job, _) in jobs:
            from dprope.train.engine import check_pretrained

            try:
                check_pretrained(job.model)
            except ConfigError as err:
                fail(str(err))
        return []
    shared = set.intersection(*(set(point) for point, _ in jobs))
    run_dirs: dict[str, list[str]] = {}
    for point, (run, _) in jobs:
        where = " ".join(o for o in point if o not in shared)
        try:
            run_dirs.setdefault(check_train(run, world_size, gpus), []).append(where)
        except ConfigError as err:
            fail(f"{err}" + (f" (sweep point {where})" if request.multirun else ""))
    for directory, points in run_dirs.items():
        if len(points) > 1:
            fail(
                f"trainer.output_dir: {len(points)} sweep points share {directory} (put +sweep after +experiment)"
            )
    return list(run_dirs)


def main(argv: list[str]) -> int:
    request = parse_args(argv)
    if request.multirun and not any(o.startswith("hydra/launcher=") for o in request.overrides):
        request.overrides.insert(0, "hydra/launcher=slurm")
    jobs = compose_jobs(request)
    options, nodes, procs, gpus = resources(request, jobs[0][1][1])
    run_dirs = check_runs(request, jobs, nodes * procs, gpus)
    check_cluster(options, None if request.multirun else SCRIPTS[request.entry], request.dry_run)

    if request.multirun:
        command = [sys.executable, str(ROOT / "launch" / "train.py"), "-m", *request.overrides]
    else:
        command = ["sbatch", *options, str(SCRIPTS[request.entry]), *request.overrides]
    where = f" -> {', '.join(run_dirs)}" if len(run_dirs) == 1 else ""
    print(f"checked {len(jobs)} job(s) of {nodes} node(s) x {procs} process(es){where}", flush=True)
    print(" ".join(shlex.quote(c) for c in command), flush=True)
    if request.dry_run:
        return 0
    os.environ.setdefault("DPROPE_ROOT", str(ROOT))  # the jobs find the scripts and entry points here
    return subprocess.call(command)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
