"""The config of perplexity (``eval.perplexity``); the conventions are described in `windows`."""

from __future__ import annotations

from dataclasses import dataclass

from dprope.config import ConfigError, check_choice

MODES = ("sliding", "truncate")
AGGREGATES = ("window", "token")


@dataclass
class PerplexityConfig:
    lengths: list[int] | None = (
        None  # window sizes L (tokens); null = 1, 2, ... x the checkpoint's original context, up to its max_position_embeddings
    )
    stride: int | None = (
        None  # S: tokens between window starts; null = 256 (YaRN), or half the shortest length when smaller
    )
    mode: str = "sliding"  # sliding (windows every S tokens) | truncate (each document cut to one window: Proof-pile protocol)
    aggregate: str = "window"  # window: exp(mean window NLL), as the YaRN scripts | token: token-weighted
    bos_every_window: bool = True  # each window = BOS + L-1 document tokens (YaRN); false: L tokens, BOS only at the document start
    split: str = "test"  # split of the `data` preset to read (local files: a split of data.paths)
    max_documents: int | None = 10  # documents used (after the length filter); null = all
    min_document_tokens: int | None = None  # skip shorter documents; null = max(lengths)
    max_document_tokens: int | None = None  # cut documents to this many tokens; null = whole documents
    batch_tokens: int | None = (
        16384  # tokens of one forward pass: windows of length L go batch_tokens // L at a time (at least eval.batch_size); null = eval.batch_size windows
    )

    def __post_init__(self) -> None:
        if self.lengths is not None and (not self.lengths or any(n < 2 for n in self.lengths)):
            raise ConfigError(
                "lengths", f"must be null or a non-empty list of lengths >= 2 (got {self.lengths})"
            )
        if self.stride is not None and self.stride < 1:
            raise ConfigError("stride", f"must be >= 1 or null (got {self.stride})")
        if self.lengths is not None and self.stride is not None and self.stride > min(self.lengths) - 1:
            raise ConfigError(
                "stride",
                f"must be in [1, min(lengths) - 1] = [1, {min(self.lengths) - 1}] (got {self.stride})",
            )
        check_choice(self, "mode", MODES)
        check_choice(self, "aggregate", AGGREGATES)
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise ConfigError("batch_tokens", f"must be >= 1 or null (got {self.batch_tokens})")
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError("max_documents", f"must be >= 1 or null (got {self.max_documents})")
