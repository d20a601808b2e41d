"""Time the full rotary-angle analysis (every strategy, and DPRoPE's candidate distributions).

    python scripts/bench_analysis.py [--factor 4] [--repeats 7]

Default: LLaMA-2 geometry (head_dim 128, base 10000, L 4096) at s=4 (16k), B=360. Prints a table
of median wall times over the repeats; the first, warm-up run is not counted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import torch

from dprope.model import ModelConfig
from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.registry import compute_scaling
from dprope.rope.report import AnalysisConfig, run_analysis
from dprope.rope.selection import DPRoPEConfig

LLAMA2 = ModelConfig(
    name="llama2-7b",
    pretrained="meta-llama/Llama-2-7b-hf",
    head_dim=128,
    rope_theta=10000.0,
    original_max_position_embeddings=4096,
)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--num-intervals", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    geometry = LLAMA2.geometry
    settings = AnalysisConfig(figures=False)
    rows = []
    for dtype in ("float32", "float64"):
        rope = DPRoPEConfig(factor=args.factor, num_intervals=args.num_intervals, angle_dtype=dtype)
        work = {
            "pre-training distribution (L positions)": partial(
                DisturbanceAnalyzer, geometry, args.num_intervals, dtype
            ),
            "DPRoPE selection (2 candidates)": partial(compute_scaling, rope, geometry),
            "full analysis (6 strategies + selection)": partial(run_analysis, LLAMA2, rope, settings),
        }
        rows += [(dtype, name, median_seconds(fn, args.repeats)) for name, fn in work.items()]

    target = int(LLAMA2.original_max_position_embeddings * args.factor)
    print(
        f"# bench_analysis: LLaMA-2 geometry, s={args.factor:g} ({target} positions), B={args.num_intervals}"
    )
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"| {'angles':<8} | {'work':<42} | {'median s':>9} |")
    print(f"|{'-' * 10}|{'-' * 44}|{'-' * 11}|")
    for dtype, work, seconds in rows:
        print(f"| {dtype:<8} | {work:<42} | {seconds:>9.3f} |")


if __name__ == "__main__":
    main()
