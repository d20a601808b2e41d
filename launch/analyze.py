"""Rotary-angle disturbance of every RoPE strategy for one model and factor.

    python launch/analyze.py model=llama2_7b rope=dprope rope.factor=4

Prints the disturbance table and the per-pair choices of the selected strategy, and writes
analysis.json (plus PNG figures) to the run directory or `analysis.output_dir`. Needs only the
model's rotary numbers, never its weights.
"""

from __future__ import annotations

from pathlib import Path

from dprope.cli import hydra_main
from dprope.rope.report import AnalysisJob, format_pairs, format_table, run_analysis, write_json


@hydra_main("analyze", AnalysisJob.from_config)
def main(cfg, job: AnalysisJob) -> None:
    settings = job.analysis
    result = run_analysis(job.model, job.rope, settings)
    print(format_table(result), end="\n\n")
    print(format_pairs(result), end="\n\n")

    if settings.output_dir:
        output_dir = Path(settings.output_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        output_dir = Path(HydraConfig.get().runtime.output_dir)
    if settings.figures:
        from dprope.rope.plots import write_figures

        for path in write_figures(result, output_dir, settings.num_pairs_plotted):
            print(f"figure: {path}")
    print(f"analysis: {write_json(result, output_dir)}")


if __name__ == "__main__":
    main()
