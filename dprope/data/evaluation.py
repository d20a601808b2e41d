"""Whole documents for perplexity: one document per item, never packed with another."""

from __future__ import annotations

from collections.abc import Iterator

from dprope.config import ConfigError
from dprope.data.build import separator_ids
from dprope.data.config import DataConfig
from dprope.data.sources import load_documents
from dprope.data.tokenizer import encode_texts


def eval_documents(
    cfg: DataConfig, tokenizer, split: str = "test", min_tokens: int = 0, max_documents: int | None = None
) -> Iterator[list[int]]:
    """Token ids of each document of ``split``, in source order: BOS first (when ``add_bos``), no EOS.

    Documents shorter than ``min_tokens`` (BOS included) are skipped, so perplexity at length N
    can ask for documents of at least N tokens; at most ``max_documents`` are yielded. The split
    and the source are checked now, before the first document is tokenized.
    """
    if split not in cfg.eval_splits:
        raise ConfigError(
            "data.eval_splits", f"split {split!r} is not an evaluation split ({', '.join(cfg.eval_splits)})"
        )
    if max_documents is not None and max_documents <= 0:
        raise ConfigError("max_documents", f"must be positive or None (got {max_documents})")
    bos, _ = separator_ids(cfg, tokenizer)
    documents = load_documents(cfg, split, "data.eval_splits")
    return _tokenized(
        documents, tokenizer, [] if bos is None else [bos], cfg.batch_size, min_tokens, max_documents
    )


def _tokenized(documents, tokenizer, prefix: list[int], batch_size: int, min_tokens: int, limit: int | None):
    yielded = 0
    for batch in documents.iter(batch_size=batch_size):
        for ids in encode_texts(tokenizer, batch["text"]):
            if len(prefix) + len(ids) < min_tokens:
                continue
            yield prefix + ids
            yielded += 1
            if limit is not None and yielded >= limit:
                return
