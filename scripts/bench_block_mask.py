"""Memory and time of building the FlexAttention block mask of a packed window (document/anchor).

    python scripts/bench_block_mask.py --lengths 8192 16384                 # compiled and eager
    python scripts/bench_block_mask.py --lengths 65536 --builders compiled

The trainer builds the mask with `dprope.train.attention.document_block_mask`: `create_block_mask`
under `torch.compile`, which evaluates the mask function block by block. ``eager`` is the same
call without compilation, which materialises the whole (seq x seq) mask first. Each row is a fresh
process that builds the mask of one window of ``--length`` tokens (documents of exponential
length, mean ``--doc-length``) once, which compiles, then again: the second build is measured.
Extra peak memory = the peak during that build minus the memory held before it: on CUDA
`torch.cuda.max_memory_allocated`, on the CPU the resident set size (``VmHWM``, reset through
``/proc/self/clear_refs``; Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUILDERS = ("compiled", "eager")
RESULT = "BLOCK_MASK "


def _status_gib(field: str) -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) / 2**20


def measure(builder: str, length: int, doc_length: int, seed: int = 0) -> dict:
    """Build the mask twice in this process; the second build's extra peak memory and time."""
    import torch

    from dprope import accelerator
    from dprope.train.attention import document_block_mask

    device = accelerator.device()
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(1, length, generator=generator) < 1 / doc_length
    segment_ids = torch.cumsum(starts.long(), -1).to(device)  # (1, seq)

    if builder == "compiled":
        build = document_block_mask
    else:
        from torch.nn.attention.flex_attention import create_block_mask

        def build(segments):
            def visible(b, h, q, k):
                return (segments[b, q] == segments[b, k]) & (k <= q)

            return create_block_mask(visible, 1, None, length, length, device=segments.device)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    build(segment_ids)
    synchronize()
    first = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**30
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_gib("VmRSS:")
    start = time.perf_counter()
    mask = build(segment_ids)
    synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else _status_gib("VmHWM:")
    blocks = mask.to_dense()  # (1, 1, query blocks, key blocks): 1 where a block is computed
    return {
        "builder": builder,
        "length": length,
        "device": str(device),
        "first_build_s": first,
        "build_s": seconds,
        "extra_peak_gib": peak - before,
        "blocks": int(blocks.numel()),
        "visible_blocks": int(blocks.sum()),
    }


def run_child(builder: str, length: int, doc_length: int, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", builder, str(length), "--doc-length", str(doc_length)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"builder": builder, "length": length, "failed": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return {"builder": builder, "length": length, "failed": last[:300]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--builders", nargs="+", choices=BUILDERS, default=list(BUILDERS))
    parser.add_argument("--doc-length", type=int, default=2048, help="mean document length")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per row")
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("BUILDER", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(RESULT + json.dumps(measure(args.child[0], int(args.child[1]), args.doc_length)), flush=True)
        return 0
    rows = [
        run_child(builder, length, args.doc_length, args.timeout)
        for length in args.lengths
        for builder in args.builders
    ]
    print("| length | builder | device | extra peak MiB | build s | first build s | visible blocks |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "failed" in row:
            print(f"| {row['length']} | {row['builder']} | failed: {row['failed']} | | | | |")
            continue
        blocks = f"{row['visible_blocks']} / {row['blocks']}"
        print(
            f"| {row['length']} | {row['builder']} | {row['device']} | {1024 * row['extra_peak_gib']:.1f} | "
            f"{row['build_s']:.3f} | {row['first_build_s']:.1f} | {blocks} |"
        )
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=2))
    return 0 if all("failed" not in row for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
