"""Passkey retrieval (Mohtashami and Jaggi, 2023), the template of docs/method-notes.md, section 7 as the
original setup builds it: prompts of a target length with a key at a depth (`prompts`), greedy
decoding of 10 new tokens (the original's answer length), and accuracy by length and depth
(`scoring`). Figures: ``passkey.png`` (accuracy by length) and ``passkey_heatmap.png``.
"""

from __future__ import annotations

from pathlib import Path

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.passkey.config import PasskeyConfig
from dprope.eval.benchmarks.passkey.prompts import PasskeyPrompt, prepare_passkey
from dprope.eval.benchmarks.passkey.scoring import score_passkey
from dprope.eval.common import BenchmarkResult, EvalContext


def prepare(cfg: PasskeyConfig, inputs: Inputs) -> list[PasskeyPrompt]:
    return prepare_passkey(cfg, inputs.tokenizer, inputs.ctx)


def run_passkey(
    model, tokenizer, cfg: PasskeyConfig, prompts: list[PasskeyPrompt], ctx: EvalContext
) -> BenchmarkResult:
    answers = ctx.backends.generate(
        model,
        tokenizer,
        [p.input_ids for p in prompts],
        cfg.max_new_tokens,
        batch_size=ctx.batch_size,
        desc="passkey",
        progress=ctx.progress,
    )
    return score_passkey(cfg, prompts, answers)


def heatmap_figure(result: BenchmarkResult, model_name: str, output_dir: Path) -> list[Path]:
    """``passkey_heatmap.png``: accuracy by length (rows) and depth (columns)."""
    from dprope.eval.plots import heatmap

    details = result.details
    path = heatmap(
        details["accuracy"],
        [str(n) for n in details["lengths"]],
        [f"{d:g}" for d in details["depths"]],
        f"passkey accuracy (%), {model_name}",
        output_dir / "passkey_heatmap.png",
        "key depth",
        "length (tokens)",
    )
    return [path]


BENCHMARK = Benchmark(
    name="passkey",
    display=Display("Passkey retrieval", "accuracy (%)"),
    config=PasskeyConfig,
    prepare=prepare,
    run=run_passkey,
    figures=heatmap_figure,
)
