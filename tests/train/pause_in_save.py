"""A training run that stops in the save of one step, through the trainer's save hook (after the
checkpoint's files, before its manifest and COMPLETE), until a file appears:

    python -m tests.train.pause_in_save STEP GO_FILE OVERRIDE...

On reaching the save it writes ``GO_FILE.paused`` (so a test knows the run holds its run
directory's lock and is mid-save), then waits for ``GO_FILE`` and goes on. The run is
`launch/train.py`'s (the same composition, typed config and `train`), only the hook is added.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from dprope.cli import compose_config
from dprope.train.config import RunConfig
from dprope.train.loop import train


def main(argv: list[str]) -> int:
    step, go, overrides = int(argv[0]), Path(argv[1]), argv[2:]
    cfg = compose_config("train", overrides)

    def pause_in_save(path, state) -> None:
        if state.step == step:
            go.with_name(go.name + ".paused").write_text(str(path))
            while not go.exists():
                time.sleep(0.05)

    logging.basicConfig()
    logging.getLogger("dprope").setLevel(logging.INFO)
    return train(
        RunConfig.from_config(cfg), OmegaConf.to_container(cfg, resolve=True), save_hook=pause_in_save
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
