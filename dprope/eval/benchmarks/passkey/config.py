"""The config of passkey retrieval (``eval.passkey``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dprope.config import ConfigError, check_choice

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
SAMPLINGS = ("random", "grid")
SIZINGS = ("original", "exact")
FIRST_LENGTH = 1024  # the default lengths double from here up to the checkpoint's context


@dataclass
class PasskeyConfig:
    lengths: list[int] | None = (
        None  # target prompt lengths T in tokens; null = 1024, 2048, 4096, ... up to max_position_embeddings
    )
    sampling: str = "random"  # random: uniform random split point (original) | grid: the depths below
    depths: list[float] = field(
        default_factory=lambda: list(DEPTHS)
    )  # grid only: share of the filler before the key
    trials: int = 10  # random: prompts per length; grid: prompts per (length, depth)
    max_new_tokens: int = 10  # greedy answer length (the original's 10)
    sizing: str = "original"  # original: filler in length_step characters, prompt < T | exact: most characters, prompt <= T
    length_step: int = (
        128  # original sizing: filler characters per search step (the original's --length-step)
    )

    def __post_init__(self) -> None:
        if self.lengths is not None and (not self.lengths or any(n <= 0 for n in self.lengths)):
            raise ConfigError(
                "lengths", f"must be null or a non-empty list of positive token counts (got {self.lengths})"
            )
        check_choice(self, "sampling", SAMPLINGS)
        check_choice(self, "sizing", SIZINGS)
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(
                "depths", f"must be a non-empty list of fractions in [0, 1] (got {self.depths})"
            )
        if self.trials < 1:
            raise ConfigError("trials", f"must be >= 1 (got {self.trials})")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
        if self.length_step < 1:
            raise ConfigError("length_step", f"must be >= 1 (got {self.length_step})")


def default_lengths(max_positions: int) -> list[int]:
    """1024, 2048, 4096, ... doubling up to the checkpoint's context, which is always the last
    (a 16k model: 1024 ... 16384; 20480: ... 16384, 20480; a context under 1024: itself)."""
    lengths = []
    length = FIRST_LENGTH
    while length < max_positions:
        lengths.append(length)
        length *= 2
    return [*lengths, max_positions]
