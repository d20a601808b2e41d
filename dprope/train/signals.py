"""Graceful stop on SIGTERM and SIGUSR1 (a scheduler's preemption or time-limit warning).

The handler only records the signal; the loop finishes the current optimizer step, saves a
checkpoint and exits with `EXIT_PREEMPTED`, agreeing across ranks through the per-step
all-reduce it already does for logging.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Installs the handlers on creation; ``requested`` names the signal once one arrives."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.requested: str | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.requested is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
