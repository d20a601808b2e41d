"""The whole GPU surface of dprope in one call, time-boxed: `make gpu-check`.

    python scripts/gpu_check.py --output outputs/gpu_check                  # one H100/H200, <= 8 minutes
    python scripts/gpu_check.py --output DIR --wheels wheels                # first install what is missing
    python scripts/gpu_check.py --output DIR --dry-run                      # every section on the CPU, tiny shapes
    python scripts/gpu_check.py --download-wheels wheels                    # (with network) the wheels it may need

Made for a bare machine with one GPU, torch and CUDA preinstalled and no network. The sections run
in priority order, each in its own process group with a time box: its own share of the budget
plus what earlier sections left unused, so every later section keeps its share. A section that
overruns is stopped ("timed out"), one without time left is "skipped (time)", one whose packages
are missing is "skipped (missing: ...)"; the check itself always finishes and writes
``summary.md`` (device, versions, date, a row per section and each section's table or result) and
``logs/<section>.log`` into the output directory, with each benchmark's own JSON/Markdown next to
them. ``--dry-run`` runs every section on the CPU (the GPU hidden) with tiny shapes: the plumbing,
not the figures.

Sections, in priority order (budget in seconds of the default 480):
  rotary          45  item 4 of issue 20: a bf16 ZeRO-3 step beyond L, then the rotary frequencies
                      equal the strategy's (the longrope update ran on the GPU)
  gpu-tests      120  `make test-gpu` (pytest -m gpu), the rotary test excepted
  bench-train    150  scripts/bench_train.py at 8k and 16k, 4 LLaMA-7B-shaped layers, (a)/(b)/(c)
  attention       75  scripts/bench_attention.py at 16k, 4 layers: sdpa/flex/flash x causal/document/anchor
  long-context    60  scripts/bench_max_length.py at 16k, 4 layers: plain, tiled, tiled + activation offload
  fp32-rotation   30  launch/precision.py: bf16 with transformers' rotation, with fp32 rotation, float32

Packages: torch comes with the machine; the others (transformers pinned at the project's version,
deepspeed, hydra-core, omegaconf, datasets, accelerate, pytest, liger-kernel and their
dependencies) may not. ``--download-wheels DIR`` (on a machine with network and the project's
environment) writes the wheels of all of them but torch and its own dependencies, at the versions
installed there, and ``DIR/requirements.txt``; ``--wheels DIR`` on the GPU machine installs, with
no index, those of them that are missing (and the project's pins where another version is there).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480.0  # the sections' budgets add up to this; --budget scales them all
DRY_RUN_BUDGET_S = 4 * BUDGET_S  # a CPU runs the tiny shapes more slowly than a GPU the real ones
MIN_START_S = 10.0  # a section with less time than this left is skipped
ROTARY_GPU = "tests/train/test_gpu.py::test_bf16_zero3_training_step"
ROTARY_CPU = "tests/train/test_engine.py::test_rotary_frequencies_are_the_strategys_after_a_training_step"

# import name -> distribution, what the sections import besides torch
REQUIRED = {
    "transformers": "transformers",
    "deepspeed": "deepspeed",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "datasets": "datasets",
    "accelerate": "accelerate",
    "pytest": "pytest",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "filelock": "filelock",
    "psutil": "psutil",
    "numpy": "numpy",
}
OPTIONAL = {"liger_kernel": "liger-kernel", "flash_attn": "flash-attn"}  # their rows say why when absent
# distributions whose version must be the project's (requirements.txt, pyproject's gpu extras)
PINNED = ("transformers", "tokenizers", "safetensors", "accelerate", "deepspeed", "hydra-core", "datasets")
# the wheels folder: these and their dependencies, minus torch and its own
WHEEL_ROOTS = (*REQUIRED.values(), "tokenizers", "safetensors", "huggingface-hub")
NOT_INSTALLED_HERE = {"liger-kernel": "0.8.5"}  # CUDA-only: pinned in pyproject's gpu extras


@dataclass
class Section:
    name: str
    budget_s: float
    what: str
    needs: tuple[str, ...]  # import names
    command: Callable[[Path, bool], list[str]]  # (output directory, dry run) -> argv


def _pytest(out: Path, name: str, *selection: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"--junitxml={out / f'{name}.xml'}",
        *selection,
    ]


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / name), *args]


SECTIONS = (
    Section(
        "rotary",
        45,
        "rotary frequencies equal the strategy's after a bf16 ZeRO-3 step beyond L (issue 20, item 4)",
        ("transformers", "deepspeed", "hydra", "datasets", "pytest"),
        lambda out, dry: _pytest(out, "rotary", *([ROTARY_CPU] if dry else ["-m", "gpu", ROTARY_GPU])),
    ),
    Section(
        "gpu-tests",
        120,
        "make test-gpu (pytest -m gpu), the rotary test excepted",
        ("transformers", "deepspeed", "hydra", "datasets", "pytest"),
        lambda out, dry: _pytest(out, "gpu_tests", "-m", "gpu", "tests", f"--deselect={ROTARY_GPU}"),
    ),
    Section(
        "bench-train",
        150,
        "training speed and memory: (a) HF Trainer, (b) dprope, (c) dprope + Liger",
        ("transformers", "deepspeed", "hydra", "accelerate"),
        lambda out, dry: _script(
            "bench_train.py",
            *(
                ["--smoke"]
                if dry
                else [
                    "--layers",
                    "4",
                    "--seq",
                    "8192",
                    "16384",
                    "--steps",
                    "3",
                    "--warmup",
                    "1",
                    "--timeout",
                    "60",
                ]
            ),
            "--output",
            str(out / "bench_train"),
        ),
    ),
    Section(
        "attention",
        75,
        "attention kernels x modes: step time and peak memory",
        ("transformers", "hydra"),
        lambda out, dry: _script(
            "bench_attention.py",
            *(
                ["--smoke"]
                if dry
                else [
                    "--preset",
                    "llama2_7b",
                    "--layers",
                    "4",
                    "--length",
                    "16384",
                    "--doc-length",
                    "exp:2048",
                ]
            ),
            "--steps",
            "2",
            "--kernels",
            # FlexAttention has no backward on the CPU (torch refuses it): not in the dry run
            "sdpa,flash_attention_2" if dry else "sdpa,flex_attention,flash_attention_2",
            "--output",
            str(out / "attention.json"),
        ),
    ),
    Section(
        "long-context",
        60,
        "tiled compute and activation offload: one step, tokens/s and peak memory",
        ("transformers", "deepspeed", "hydra"),
        lambda out, dry: _script(
            "bench_max_length.py",
            *(
                ["--smoke", "--layers", "1", "--options", "plain", "tiled+offload"]
                if dry
                else ["--layers", "4", "--options", "plain", "tiled", "tiled+offload"]
                + ["--min-length", "16384", "--max-length", "16384", "--granule", "16384"]
            ),
            "--output",
            str(out / "long_context.json"),
        ),
    ),
    Section(
        "fp32-rotation",
        30,
        "bf16 rotation deviation: transformers' rotation, fp32 rotation, float32 model",
        ("transformers", "hydra"),
        lambda out, dry: [
            sys.executable,
            str(ROOT / "launch" / "precision.py"),
            f"precision.output_dir={out / 'precision'}",
            "precision.figures=false",
            *(["precision.length=128", "precision.buckets=4"] if dry else []),
        ],
    ),
)


@dataclass
class Outcome:
    name: str
    status: str  # passed | failed (exit N) | timed out (after N s) | skipped (...)
    seconds: float = 0.0
    box_s: float = 0.0
    log: str = ""
    details: list[str] = field(default_factory=list)


def missing_modules(names) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def pinned_versions() -> dict[str, str]:
    """``name==version`` pins of requirements.txt and pyproject's gpu extras."""
    text = (ROOT / "requirements.txt").read_text() + (ROOT / "pyproject.toml").read_text()
    return {m[0].lower(): m[1] for m in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"',;#]*)", text)}


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Device, versions and what is missing, without importing any of the checked packages."""
    import torch

    pins = pinned_versions()
    packages = {}
    for distribution in (*REQUIRED.values(), *OPTIONAL.values(), "tokenizers", "safetensors", "triton"):
        version = installed_version(distribution)
        pin = pins.get(distribution)
        note = "" if version is None or pin is None or version == pin else f" (the project pins {pin})"
        packages[distribution] = ("not installed" if version is None else version) + note
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "packages": packages,
        "missing": [REQUIRED[name] for name in missing_modules(REQUIRED)],
        "missing_optional": [OPTIONAL[name] for name in missing_modules(OPTIONAL)],
    }


def child_environment(out: Path, dry_run: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(
        WANDB_MODE="disabled", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    env.setdefault("DPROPE_DATA_CACHE", str(out / "data_cache"))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if dry_run:
        env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    return env


def run_boxed(command: list[str], box_s: float, log: Path, env: dict[str, str]) -> tuple[int | None, float]:
    """Run ``command`` in its own process group, output to ``log``; stop the group (SIGTERM, then
    SIGKILL) after ``box_s`` seconds. Returns (exit code or None when stopped, seconds)."""
    start = time.monotonic()
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=box_s)
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            code = None
    return code, time.monotonic() - start


def run_sections(
    sections, out: Path, budget_s: float, dry_run: bool, env: dict[str, str], report=print
) -> list[Outcome]:
    """Each section in order, boxed to its share of ``budget_s`` (its budget, scaled so that all
    add up to ``budget_s``) plus what earlier ones left unused."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    scale = budget_s / sum(s.budget_s for s in sections)
    outcomes = []
    for index, section in enumerate(sections):
        reserved = scale * sum(s.budget_s for s in sections[index + 1 :])  # kept for the later sections
        left = deadline - time.monotonic()
        box = min(left, max(left - reserved, scale * section.budget_s))
        missing = missing_modules(section.needs)
        if missing:
            outcome = Outcome(section.name, f"skipped (missing: {', '.join(missing)})")
        elif box < MIN_START_S:
            outcome = Outcome(section.name, "skipped (time)")
        else:
            log = logs / f"{section.name}.log"
            report(f"[{section.name}] up to {box:.0f} s: {section.what}")
            code, seconds = run_boxed(section.command(out, dry_run), box, log, env)
            status = (
                f"timed out (after {box:.0f} s)"
                if code is None
                else "passed"
                if code == 0
                else f"failed (exit {code})"
            )
            outcome = Outcome(section.name, status, seconds, box, str(log.relative_to(out)))
        report(
            f"[{section.name}] {outcome.status}" + (f" in {outcome.seconds:.0f} s" if outcome.seconds else "")
        )
        outcomes.append(outcome)
    return outcomes


def junit_details(path: Path) -> list[str]:
    """Counts and the failed or skipped tests of a pytest run."""
    if not path.exists():
        return []
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    lines = [
        f"tests: {suite.get('tests')}, failures: {suite.get('failures')}, errors: {suite.get('errors')}, "
        f"skipped: {suite.get('skipped')}, {float(suite.get('time', 0)):.0f} s"
    ]
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                message = (
                    (element.get("message") or "").splitlines()[0][:200] if element.get("message") else ""
                )
                lines.append(f"- {kind}: {case.get('classname')}::{case.get('name')}: {message}")
    return lines


def section_details(outcome: Outcome, out: Path) -> list[str]:
    """What a finished section measured, for the summary."""
    if outcome.name in ("rotary", "gpu-tests"):
        return junit_details(out / ("rotary.xml" if outcome.name == "rotary" else "gpu_tests.xml"))
    if outcome.name == "bench-train" and (out / "bench_train" / "bench_train.md").exists():
        return (out / "bench_train" / "bench_train.md").read_text().splitlines()
    if not outcome.log:
        return []
    lines = (out / outcome.log).read_text(errors="replace").splitlines()
    if outcome.name == "attention":
        start = next((i for i, line in enumerate(lines) if line.startswith("mode ")), None)
        return ["```", *lines[start - 1 :], "```"] if start else ["```", *lines[-20:], "```"]
    if outcome.name == "long-context":
        keep = [line for line in lines if line.startswith(("model states", "option ", "plain", "tiled"))]
        return ["```", *keep, "```"]
    if outcome.name == "fp32-rotation":
        start = next((i for i, line in enumerate(lines) if line.startswith("attention logits")), None)
        return ["```", *(lines[start:] if start is not None else lines[-15:]), "```"]
    return []


def write_summary(out: Path, env_info: dict, outcomes: list[Outcome], budget_s: float, dry_run: bool) -> Path:
    lines = [
        "# dprope GPU check" + (" (dry run on the CPU: plumbing only, no GPU figure)" if dry_run else ""),
        "",
        f"- date: {env_info['date']}",
        f"- device: {env_info['device']}"
        + (f", {env_info['gpu_memory_gib']:.1f} GiB" if env_info.get("gpu_memory_gib") else ""),
        f"- python {env_info['python']}, torch {env_info['torch']}, CUDA {env_info['cuda']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env_info["packages"].items()),
        f"- budget: {budget_s:.0f} s; total {sum(o.seconds for o in outcomes):.0f} s",
    ]
    if env_info["missing"]:
        lines.append(
            f"- missing: {', '.join(env_info['missing'])}: bring the wheels "
            "(`python scripts/gpu_check.py --download-wheels wheels` where there is network, then `--wheels wheels`)"
        )
    lines += ["", "| section | status | seconds | box (s) | log |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        lines.append(
            f"| {outcome.name} | {outcome.status} | {outcome.seconds:.0f} | {outcome.box_s:.0f} | {outcome.log} |"
        )
    for outcome in outcomes:
        if outcome.details:
            lines += ["", f"## {outcome.name}", "", *outcome.details]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- wheels for a machine without network


def _requirement_names(distribution: str) -> list[str]:
    """The distributions ``distribution`` needs here (markers evaluated, no extras)."""
    from packaging.requirements import Requirement

    names = []
    for text in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.append(requirement.name)
    return names


def closure(roots) -> dict[str, str]:
    """Installed name -> version of ``roots`` and everything they need (here)."""
    found: dict[str, str] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        key = name.lower().replace("_", "-")
        version = installed_version(name)
        if key in found or version is None:
            continue
        found[key] = version
        stack.extend(_requirement_names(name))
    return found


def wheel_list() -> dict[str, str]:
    """The wheels the check may need: its packages' closure minus torch's own closure."""
    wanted = closure(WHEEL_ROOTS)
    for name in closure(["torch"]):
        wanted.pop(name, None)
    wanted.update(NOT_INSTALLED_HERE)
    return dict(sorted(wanted.items()))


def download_wheels(directory: Path, python_version: str | None, skip: list[str] | None = None) -> int:
    """pip download (binary wheels, no dependencies resolved: the list is complete) or, for a
    source-only package, pip wheel; then requirements.txt and the folder's size. ``skip``: what
    the GPU machine is known to have (numpy, pandas, pyarrow in many images)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {n: v for n, v in wheel_list().items() if n not in {s.lower() for s in skip or []}}
    platform_args = []
    if python_version:
        platform_args = ["--python-version", python_version, "--implementation", "cp"]
        platform_args += [
            f"--platform={tag}" for tag in ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "linux_x86_64")
        ]
    pip = [sys.executable, "-m", "pip"]
    failed = []
    for name, version in wanted.items():
        spec = f"{name}=={version}"
        done = subprocess.run(
            [
                *pip,
                "download",
                "-q",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                str(directory),
                *platform_args,
                spec,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:  # a source-only package (deepspeed, antlr4-python3-runtime): pure Python
            done = subprocess.run(
                [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(directory), spec],
                capture_output=True,
                text=True,
            )
        if done.returncode != 0:
            failed.append(f"{spec}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    (directory / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in wanted.items()))
    size = sum(p.stat().st_size for p in directory.glob("*.whl")) / 2**20
    print(
        f"{len(wanted)} distributions, {len(list(directory.glob('*.whl')))} wheels, {size:.1f} MiB in {directory}"
    )
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


def to_install(wanted: dict[str, str]) -> list[str]:
    """``name==version`` of the wanted distributions missing here, or pinned and at another version."""
    return [
        f"{name}=={version}"
        for name, version in wanted.items()
        if installed_version(name) is None or (name in PINNED and installed_version(name) != version)
    ]


def install_wheels(directory: Path, report=print) -> None:
    """Install from ``directory`` (no index) what is missing here, and the pinned packages whose
    installed version differs."""
    listed = directory / "requirements.txt"
    if not listed.exists():
        raise SystemExit(f"error: --wheels: no requirements.txt in {directory} (made by --download-wheels)")
    wanted = dict(line.strip().split("==", 1) for line in listed.read_text().splitlines() if "==" in line)
    install = to_install(wanted)
    if not install:
        report("wheels: nothing to install")
        return
    report(f"wheels: installing {' '.join(install)}")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--find-links",
        str(directory),
    ]
    subprocess.run([*command, *install], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, help="directory for summary.md, logs/ and the benchmarks' files"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"seconds for all sections ({BUDGET_S:.0f}; dry run {DRY_RUN_BUDGET_S:.0f})",
    )
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU with tiny shapes")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SECTIONS], help="run these sections")
    parser.add_argument(
        "--wheels", type=Path, help="install what is missing from this folder first (no index)"
    )
    parser.add_argument(
        "--download-wheels", type=Path, metavar="DIR", help="write the wheels into DIR and stop"
    )
    parser.add_argument(
        "--python-version", help="with --download-wheels: the GPU machine's Python (e.g. 3.12)"
    )
    parser.add_argument(
        "--skip", nargs="+", default=[], help="with --download-wheels: distributions to leave out"
    )
    args = parser.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels, args.python_version, args.skip)
    if args.output is None:
        parser.error("--output is required")
    if args.budget is None:
        args.budget = DRY_RUN_BUDGET_S if args.dry_run else BUDGET_S
    if args.dry_run:  # this process too: the environment section reports the CPU
        os.environ.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.wheels:
        install_wheels(args.wheels)
    env_info = environment()
    (out / "environment.json").write_text(json.dumps(env_info, indent=2))
    print(f"device: {env_info['device']}; torch {env_info['torch']}, CUDA {env_info['cuda']}", flush=True)
    if not args.dry_run and env_info["cuda"] is None:
        print("note: this torch has no CUDA: the GPU sections will skip or fail (use --dry-run on a CPU)")
    sections = [s for s in SECTIONS if not args.only or s.name in args.only]
    env = child_environment(out, args.dry_run)
    outcomes = run_sections(
        sections, out, args.budget, args.dry_run, env, lambda line: print(line, flush=True)
    )
    for outcome in outcomes:
        outcome.details = section_details(outcome, out)
    summary = write_summary(out, env_info, outcomes, args.budget, args.dry_run)
    shutil.rmtree(out / "data_cache", ignore_errors=True)
    print(f"summary: {summary}")
    return 0 if all(o.status == "passed" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
