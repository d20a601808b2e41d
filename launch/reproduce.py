"""The paper's comparison at small scale, end to end on one machine (`make reproduce`).

    python launch/reproduce.py                      # CPU preset: tiny Llama, L=128 -> 512, 4 seeds
    python launch/reproduce.py reproduce=gpu        # a larger model and L (one GPU)
    python launch/reproduce.py reproduce.seeds=[0] reproduce.output_dir=outputs/reproduce/one

Mixes synthetic passkey documents into the corpus, pre-trains one small model per seed at L,
tabulates every strategy's disturbance at s, measures the strategies (perplexity and passkey
retrieval) training-free and fine-tuned (causal, and document/anchor attention), runs the RoPE
precision analysis on each pre-trained model, and writes report.md (verdict first, paired
intervals) and figures to `reproduce.output_dir`. Every stage is cached: re-running skips finished stages and a killed run
continues. Exit codes: 0 done, 1 a stage failed (finished stages are kept), 2 bad configuration.
"""

from __future__ import annotations

import logging

from dprope.cli import fail, hydra_main
from dprope.reproduce import Pipeline, Reproduction
from dprope.reproduce.stages import StageFailed


@hydra_main("reproduction", Reproduction.from_config)
def main(cfg, repro: Reproduction) -> None:
    logging.getLogger("dprope").setLevel(logging.INFO)
    pipeline = Pipeline(repro)  # every stage's config is built (and checked) before the first runs
    try:
        report = pipeline.run()
    except StageFailed as err:
        fail(str(err), code=1)
    print(report.read_text())
    print(f"report: {report}")


if __name__ == "__main__":
    main()
