"""One console line as each set-up phase of a run starts, with the seconds since the run began.

A first run on a busy machine spends a minute or more before its first step (importing torch,
transformers and DeepSpeed, tokenizing the data into the cache, building the model and the
engine); these lines say which phase it is in. Rank 0 only (the launcher's ``RANK``), through
the ``dprope`` logger that the console shows.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("dprope.train.setup")


def _process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that cannot be read."""
    try:
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# the run's beginning: the process's start, else the first import of this module
_START = time.monotonic() - (_process_age() or 0.0)


def note(message: str) -> None:
    """``set-up 12.3 s: <message>`` on rank 0, the seconds counted from the process's start."""
    if int(os.environ.get("RANK", "0")) == 0:
        log.info("set-up %.1f s: %s", time.monotonic() - _START, message)
