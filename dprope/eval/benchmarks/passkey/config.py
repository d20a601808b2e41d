"""The config of passkey retrieval (``eval.passkey``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dprope.config import ConfigError, check_choice

LENGTHS = (1024, 2048, 4096, 8192, 12288, 16384, 20480)  # up to 20k tokens (docs/method-notes.md, section 7)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
SAMPLINGS = ("random", "grid")


@dataclass
class PasskeyConfig:
    lengths: list[int] = field(default_factory=lambda: list(LENGTHS))  # target prompt lengths in tokens
    sampling: str = "random"  # random: uniform random split point (original) | grid: the depths below
    depths: list[float] = field(
        default_factory=lambda: list(DEPTHS)
    )  # grid only: share of the filler before the key
    trials: int = 10  # random: prompts per length; grid: prompts per (length, depth)
    max_new_tokens: int = 10  # greedy answer length (the original's 10)

    def __post_init__(self) -> None:
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ConfigError(
                "lengths", f"must be a non-empty list of positive token counts (got {self.lengths})"
            )
        check_choice(self, "sampling", SAMPLINGS)
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(
                "depths", f"must be a non-empty list of fractions in [0, 1] (got {self.depths})"
            )
        if self.trials < 1:
            raise ConfigError("trials", f"must be >= 1 (got {self.trials})")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
