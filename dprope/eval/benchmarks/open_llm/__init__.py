"""Short-context benchmarks in the DPRoPE paper's settings (docs/method-notes.md, section 7) through
lm-eval (`dprope.eval.harness`): TruthfulQA (mc2) 0-shot, HellaSwag 0-shot (acc_norm), MMLU
5-shot (acc) and ARC-challenge 25-shot (acc_norm). The tasks are those of the Open LLM
Leaderboard (v1), but these are the paper's settings, not the leaderboard's: the leaderboard ran
HellaSwag 10-shot. As the leaderboard, MMLU is the unweighted mean of its 57 subjects
(``subtask_mean``), not lm-eval's group score weighted by subject size; the few-shot examples
are drawn with lm-eval's default seed (1234). Figure: ``open_llm.png`` (one bar per task).
"""

from __future__ import annotations

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.open_llm.config import OpenLLMConfig
from dprope.eval.common import BenchmarkResult, EvalContext
from dprope.eval.harness import evaluate_tasks, index_tasks

FIELD = "eval.open_llm"


def prepare_open_llm(cfg: OpenLLMConfig, ctx: EvalContext):
    """Index the tasks and check every name before the model is loaded."""
    return index_tasks(cfg, ctx, FIELD)


def prepare(cfg: OpenLLMConfig, inputs: Inputs):
    return prepare_open_llm(cfg, inputs.ctx)


def run_open_llm(model, tokenizer, cfg: OpenLLMConfig, manager, ctx: EvalContext) -> BenchmarkResult:
    summary, details, table = evaluate_tasks(model, tokenizer, cfg, manager, ctx, FIELD)
    markdown = (
        "The DPRoPE paper's short-context settings (HellaSwag 0-shot; the leaderboard used 10-shot):\n\n"
    )
    return BenchmarkResult("open_llm", summary, {"tasks": details}, [], markdown + table)


BENCHMARK = Benchmark(
    name="open_llm",
    display=Display("Short context (lm-eval)", "score (x100)"),
    config=OpenLLMConfig,
    prepare=prepare,
    run=run_open_llm,
)
