"""Evaluate a checkpoint on the paper's benchmarks (method-notes section 7).

    python launch/eval.py eval=passkey model.pretrained=<dir or hub id> model.name=ours-16k
    python launch/eval.py eval=all model=llama2_7b model.pretrained=<dir> eval.batch_size=4 logger=wandb
    python launch/eval.py model=llama2_7b model.pretrained=<base> rope=yarn rope.factor=4 eval=perplexity

eval=passkey | perplexity | longbench_e | ruler | open_llm | all. ``rope=<strategy>`` applies that
strategy to the base checkpoint at load time (training-free evaluation). Writes results.json,
results.md, PNG plots and predictions/<benchmark>.jsonl to the run directory (or
`eval.output_dir`), rewriting them after each benchmark, and prints each benchmark's tables.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from dprope.cli import hydra_main
from dprope.config import from_mapping
from dprope.eval.report import log_to_wandb, write_results
from dprope.eval.suite import EvalReport, eval_config, run_suite
from dprope.model import ModelConfig
from dprope.rope.registry import rope_config
from dprope.train.config import LoggerConfig


def _container(cfg, key: str):
    return OmegaConf.to_container(cfg[key], resolve=True) if key in cfg and cfg[key] is not None else None


@hydra_main("evaluate")
def main(cfg) -> None:
    model = from_mapping(ModelConfig, _container(cfg, "model"), prefix="model")
    settings = eval_config(_container(cfg, "eval"))
    logger = from_mapping(LoggerConfig, _container(cfg, "logger"), prefix="logger")
    rope = rope_config(_container(cfg, "rope")) if _container(cfg, "rope") is not None else None
    data = None
    if "perplexity" in settings.tasks and _container(cfg, "data") is not None:
        from dprope.data import data_config

        data = data_config(_container(cfg, "data"))

    if settings.output_dir:
        output_dir = Path(settings.output_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        output_dir = Path(HydraConfig.get().runtime.output_dir)

    def on_result(report: EvalReport) -> None:
        name = next(reversed(report.benchmarks))
        print(f"\n## {name}\n\n{report.benchmarks[name].markdown}\n", flush=True)
        write_results(report, output_dir)

    report = run_suite(model, settings, data, on_result, rope)
    figures = []
    if settings.plots:
        from dprope.eval.plots import plot_benchmark

        for result in report.benchmarks.values():
            figures += plot_benchmark(result, model.name, output_dir)
    for path in [*write_results(report, output_dir), *figures]:
        print(f"wrote: {path}")

    if logger.kind == "wandb":
        log_to_wandb(logger, output_dir, report, figures)


if __name__ == "__main__":
    main()
