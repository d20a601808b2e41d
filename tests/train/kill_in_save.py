"""A training run that kills itself (SIGKILL) in the save of one step, through the trainer's save
hook: after every file of the checkpoint is written, before its manifest and COMPLETE.

    python -m tests.train.kill_in_save STEP OVERRIDE...

The run is `launch/train.py`'s (the same composition, typed config and `train`), only the hook
is added.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from omegaconf import OmegaConf

from dprope.cli import compose_config
from dprope.train.config import RunConfig
from dprope.train.loop import train


def main(argv: list[str]) -> int:
    step, overrides = int(argv[0]), argv[1:]
    cfg = compose_config("train", overrides)

    def kill_in_save(path, state) -> None:
        if state.step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    logging.basicConfig()
    logging.getLogger("dprope").setLevel(logging.INFO)
    return train(
        RunConfig.from_config(cfg), OmegaConf.to_container(cfg, resolve=True), save_hook=kill_in_save
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
