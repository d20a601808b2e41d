"""Evaluate a checkpoint on the paper's benchmarks (docs/method-notes.md, section 7).

    python launch/eval.py eval=passkey model.pretrained=<dir or hub id> model.name=ours-16k
    python launch/eval.py eval=all model=llama2_7b model.pretrained=<dir> eval.batch_size=4 logger=wandb
    python launch/eval.py model=llama2_7b model.pretrained=<base> rope=yarn rope.factor=4 eval=perplexity

eval=passkey | perplexity | longbench_e | longbench_v2 | ruler | babilong | open_llm | all. ``rope=<strategy>`` applies that
strategy to the base checkpoint at load time (training-free evaluation). Writes results.json,
results.md, PNG plots and predictions/<benchmark>.jsonl to the run directory (or
`eval.output_dir`), rewriting them after each benchmark, and prints each benchmark's tables.
"""

from __future__ import annotations

from pathlib import Path

from dprope.cli import hydra_main
from dprope.eval.job import EvalJob
from dprope.eval.report import log_to_wandb, write_figures, write_results
from dprope.eval.suite import EvalReport, run_suite


@hydra_main("evaluate", EvalJob.from_config)
def main(cfg, job: EvalJob) -> None:
    settings = job.eval
    if settings.output_dir:
        output_dir = Path(settings.output_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        output_dir = Path(HydraConfig.get().runtime.output_dir)

    def on_result(report: EvalReport) -> None:
        name = next(reversed(report.benchmarks))
        print(f"\n## {name}\n\n{report.benchmarks[name].markdown}\n", flush=True)
        write_results(report, output_dir)

    report = run_suite(job.model, settings, job.data, on_result, job.rope)
    figures = write_figures(report, report.model["name"], output_dir) if settings.plots else []
    for path in [*write_results(report, output_dir), *figures]:
        print(f"wrote: {path}")

    if job.logger.kind == "wandb":
        log_to_wandb(job.logger, output_dir, report, figures)


if __name__ == "__main__":
    main()
