"""The environment `make install-gpu` compiles flash-attn in: for the GPUs of this machine only,
with as many parallel compile jobs as its free memory allows.

    python scripts/flash_attn_build_env.py      # prints FLASH_ATTN_CUDA_ARCHS=.. MAX_JOBS=.. NVCC_THREADS=..

flash-attn 2.8.3's `setup.py` compiles its 72 CUDA files once per architecture of
``FLASH_ATTN_CUDA_ARCHS`` (default ``80;90;100;120``: four times over); each compile job runs
``NVCC_THREADS`` nvcc threads (default 4) and, by flash-attn's own figure, peaks at 8-9 GB.
Here the architectures are those of the GPUs torch sees (a GPU runs code built for its major
version and a lower minor: compute capability 8.6 takes ``80``), and ``MAX_JOBS`` is flash-attn's
own rule made visible: half the CPUs, at most one job per 9 GiB of available memory, at least 1.
A variable already set in the environment is kept. The values go to stdout as ``KEY=VALUE`` words
for ``env``; a line saying why goes to stderr.
"""

from __future__ import annotations

import os
import sys

ARCHS = (80, 90, 100, 120)  # what flash-attn 2.8.3 builds
GIB_PER_JOB = 9  # flash-attn's setup.py: each job peaks at 8-9 GB with 4 nvcc threads
NVCC_THREADS = 4


def cuda_archs(capabilities: list[tuple[int, int]]) -> str:
    """``FLASH_ATTN_CUDA_ARCHS`` for GPUs of these compute capabilities: for each, the newest
    architecture flash-attn builds that it runs (same major version, minor not above its own)."""
    chosen = set()
    for major, minor in capabilities:
        fitting = [arch for arch in ARCHS if arch // 10 == major and arch % 10 <= minor]
        if not fitting:
            raise ValueError(
                f"flash-attn 2.8.3 builds no kernels for compute capability {major}.{minor} "
                f"(it builds {', '.join(str(a) for a in ARCHS)})"
            )
        chosen.add(max(fitting))
    if not chosen:
        raise ValueError("no CUDA GPU visible: set FLASH_ATTN_CUDA_ARCHS (90 for H100/H200)")
    return ";".join(str(arch) for arch in sorted(chosen))


def max_jobs(available_gib: float, cpus: int) -> int:
    """Parallel compile jobs: half the CPUs, one per `GIB_PER_JOB` GiB available, at least one."""
    return max(1, min(cpus // 2, int(available_gib // GIB_PER_JOB)))


def build_environment(environ: dict[str, str]) -> tuple[dict[str, str], str]:
    """The variables to build with and a sentence saying where they come from."""
    import psutil

    reasons = []
    values = {"NVCC_THREADS": environ.get("NVCC_THREADS") or str(NVCC_THREADS)}
    if environ.get("FLASH_ATTN_CUDA_ARCHS"):
        values["FLASH_ATTN_CUDA_ARCHS"] = environ["FLASH_ATTN_CUDA_ARCHS"]
        reasons.append("architectures as set")
    else:
        import torch

        devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
        capabilities = [torch.cuda.get_device_capability(d) for d in devices]
        values["FLASH_ATTN_CUDA_ARCHS"] = cuda_archs(capabilities)
        names = sorted({torch.cuda.get_device_name(d) for d in devices})
        reasons.append(f"architectures of {', '.join(names)}")
    if environ.get("MAX_JOBS"):
        values["MAX_JOBS"] = environ["MAX_JOBS"]
        reasons.append("jobs as set")
    else:
        available = psutil.virtual_memory().available / 2**30
        cpus = os.cpu_count() or 1
        values["MAX_JOBS"] = str(max_jobs(available, cpus))
        reasons.append(f"{available:.0f} GiB available / {GIB_PER_JOB} GiB per job, {cpus} CPUs")
    return values, "; ".join(reasons)


def main() -> int:
    try:
        values, why = build_environment(dict(os.environ))
    except ValueError as err:
        print(f"error: FLASH_ATTN_CUDA_ARCHS: {err}", file=sys.stderr)
        return 2
    print(" ".join(f"{key}={value}" for key, value in values.items()))
    print(f"flash-attn build: {' '.join(f'{k}={v}' for k, v in values.items())} ({why})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
