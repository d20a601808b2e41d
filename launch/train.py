"""Fine-tune a RoPE model for a longer context.

    python launch/train.py                                   # embedded default: tiny model, local text, CPU
    deepspeed launch/train.py +experiment=llama13b_16k_ours  # the paper's setting (8 GPUs)
    torchrun --nproc_per_node=8 launch/train.py +experiment=llama7b_8k_pi

Exit codes: 0 done, 2 bad configuration, 3 non-finite loss, 4 a checkpoint DeepSpeed cannot load,
75 stopped by SIGTERM/SIGUSR1 after saving a checkpoint (requeue the job; `trainer.resume=auto`
continues).
"""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from dprope.cli import hydra_main
from dprope.train.config import RunConfig


@hydra_main("train", RunConfig.from_config)
def main(cfg, run: RunConfig) -> None:
    from dprope.train.notes import note

    logging.getLogger("dprope").setLevel(logging.INFO)
    note("loading torch, transformers and DeepSpeed")
    from dprope.train.loop import train  # DeepSpeed loads only once the whole command line checks

    code = train(run, OmegaConf.to_container(cfg, resolve=True))
    if code:  # a clean finish returns, so a multirun (local or SLURM) records it and goes on
        raise SystemExit(code)


if __name__ == "__main__":
    main()
