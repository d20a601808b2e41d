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
checks and prints the command without submitting.

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
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from dprope.cli import CONFIG_DIR, check_group_overrides, fail  # noqa: E402
from dprope.config import ConfigError, from_mapping  # noqa: E402

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


def one_line(err: Exception) -> str:
    """Hydra's multi-line composition errors as `<field>: <message>`."""
    text = str(err).strip()
    missing = re.search(r"Could not find '(.+)/([^/']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        return f"{group}: unknown option '{option}' (available: {', '.join(options)})"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        cause = str(err.__cause__ or "").strip().splitlines()
        return f"{override.group(1)}: {cause[0] if cause else 'cannot be overridden'}"
    return f"overrides: {text.splitlines()[0]}"


def compose(entry: str, overrides: list[str], job_num: int = 0):
    """The job's config with its `hydra` node, interpolations into it resolvable."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None, job_name=entry):
            cfg = hydra_compose(CONFIG_NAMES[entry], overrides=overrides, return_hydra_config=True)
    except Exception as err:  # Hydra raises several kinds; all mean a bad override
        fail(one_line(err))
    with open_dict(cfg):
        cfg.hydra.job.num = job_num
    HydraConfig.instance().set_config(cfg)
    return cfg


def sweep_jobs(entry: str, overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, expanded as Hydra's basic sweeper does (config `hydra.sweeper.params`
    first, then the command line)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as err:
        fail(one_line(err))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose(entry, fixed).hydra.sweeper.get("params") or {}
    try:
        everything = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
        return BasicSweeper.split_arguments(everything, None)[0]
    except Exception as err:
        fail(one_line(err))


def check_train(cfg, world_size: int, gpus_per_node: int) -> str:
    """The checks the trainer makes before it touches a device; returns the run directory."""
    from omegaconf import OmegaConf

    from dprope.data import data_config
    from dprope.model import ModelConfig
    from dprope.rope.registry import rope_config
    from dprope.train.config import LoggerConfig, TrainerConfig
    from dprope.train.engine import check_pretrained

    plain = {
        k: OmegaConf.to_container(cfg[k], resolve=True)
        for k in ("model", "rope", "data", "trainer", "logger")
    }
    model = from_mapping(ModelConfig, plain["model"], prefix="model")
    rope = rope_config(plain["rope"])
    data = data_config(plain["data"])
    trainer = from_mapping(TrainerConfig, plain["trainer"], prefix="trainer")
    from_mapping(LoggerConfig, plain["logger"], prefix="logger")
    check_pretrained(model)
    target = model.scaling(rope).target_length
    if data.max_length > target:
        raise ConfigError("data.max_length", f"{data.max_length} exceeds the target context s x L = {target}")
    trainer.accumulation_steps(world_size)
    if trainer.precision == "bf16" and gpus_per_node == 0:
        raise ConfigError(
            "trainer.precision", "bf16 needs a CUDA GPU; the job requests none (use fp32 or auto)"
        )
    return trainer.output_dir


def check_eval(cfg) -> None:
    from omegaconf import OmegaConf

    from dprope.eval.suite import eval_config
    from dprope.model import ModelConfig
    from dprope.train.config import LoggerConfig
    from dprope.train.engine import check_pretrained

    model = from_mapping(ModelConfig, OmegaConf.to_container(cfg.model, resolve=True), prefix="model")
    eval_config(OmegaConf.to_container(cfg.eval, resolve=True))
    from_mapping(LoggerConfig, OmegaConf.to_container(cfg.logger, resolve=True), prefix="logger")
    check_pretrained(model)


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


def launcher_options(cfg) -> list[str]:
    """The sbatch options the submitit launcher will use, for `sbatch --test-only`."""
    from omegaconf import OmegaConf

    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
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


def check_cluster(options: list[str], script: Path | None) -> None:
    """The site's own rules, then SLURM's verdict on the request without queueing it."""
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
        fail("slurm: sbatch not found: submit from a machine of the cluster")
    if result.returncode != 0:
        lines = [line.removeprefix("sbatch: error: ") for line in result.stderr.strip().splitlines()]
        message = lines[0] if lines else f"sbatch --test-only exited with {result.returncode}"
        fail(f"slurm: {message} (options: {' '.join(options) or 'none'}; SBATCH_* variables apply too)")


def resources(request: Request, first_job: list[str]) -> tuple[list[str], int, int, int]:
    """The sbatch options of the request, and the nodes, processes and GPUs per node they give."""
    if request.multirun:
        options = launcher_options(compose("train", first_job))
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


def check_jobs(request: Request, jobs: list[list[str]], world_size: int, gpus: int) -> list[str]:
    """Every job's configs; returns the run directories (training)."""
    shared = set.intersection(*(set(job) for job in jobs))
    run_dirs: dict[str, list[str]] = {}
    for num, job in enumerate(jobs):
        cfg = compose(request.entry, job, num)
        point = " ".join(o for o in job if o not in shared)
        try:
            if request.entry == "train":
                run_dirs.setdefault(check_train(cfg, world_size, gpus), []).append(point)
            else:
                check_eval(cfg)
        except ConfigError as err:
            fail(f"{err}" + (f" (sweep point {point})" if request.multirun else ""))
    for directory, points in run_dirs.items():
        if len(points) > 1:
            fail(
                f"trainer.output_dir: {len(points)} sweep points share {directory} (put +sweep after +experiment)"
            )
    return list(run_dirs)


def main(argv: list[str]) -> int:
    request = parse_args(argv)
    check_group_overrides(request.overrides)
    if request.multirun and not any(o.startswith("hydra/launcher=") for o in request.overrides):
        request.overrides.insert(0, "hydra/launcher=slurm")
    jobs = sweep_jobs(request.entry, request.overrides) if request.multirun else [request.overrides]
    options, nodes, procs, gpus = resources(request, jobs[0])
    run_dirs = check_jobs(request, jobs, nodes * procs, gpus)
    check_cluster(options, None if request.multirun else SCRIPTS[request.entry])

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
