"""`build_train_dataset`: the packed training set, from the cache when it holds it.

Order of work, so that every bad value fails fast: the lengths, the separators, the source's
files (or hub id) and the cache key are checked first; a complete cache with the same key is
opened without reading the source; otherwise the documents are loaded (text field and a
non-empty split checked) and only then tokenized.

The paper's subset (PG19, ``steps x global batch`` sequences): the split's documents are
shuffled with ``seed``, tokenized and packed in that order, and the build stops as soon as
``num_sequences`` full sequences exist, so a 64k x 8192-token subset tokenizes about 0.5B tokens,
not the whole corpus. `datasets` loads and shuffles the documents; ``num_proc`` threads
tokenize them a call at a time (`dprope.data.encode`), each call coming back as one joined token
array, so the packed stream is written with no per-token Python work.
"""

from __future__ import annotations

import logging
from contextlib import closing
from pathlib import Path
from typing import Any

from dprope.config import ConfigError
from dprope.data import cache
from dprope.data.config import DataConfig
from dprope.data.dataset import PackedDataset, PackedStream
from dprope.data.encode import encoded_batches
from dprope.data.packing import piece_batches, token_dtype
from dprope.data.sources import load_documents, source_fingerprint
from dprope.data.tokenizer import tokenizer_fingerprint
from dprope.storage import NoSpaceError

log = logging.getLogger(__name__)


def separator_ids(cfg: DataConfig, tokenizer) -> tuple[int | None, int | None]:
    """The BOS and EOS ids packing puts around each document (None when switched off; ``cfg``
    resolved, `DataConfig.resolved`)."""
    bos = tokenizer.bos_token_id if cfg.add_bos else None
    eos = tokenizer.eos_token_id if cfg.add_eos else None
    if cfg.add_bos and bos is None:
        raise ConfigError("data.add_bos", "the tokenizer has no BOS token (set data.add_bos=false)")
    if cfg.add_eos and eos is None:
        raise ConfigError("data.add_eos", "the tokenizer has no EOS token (set data.add_eos=false)")
    return bos, eos


def pad_id(tokenizer) -> int:
    """Filler of a kept tail (never in the loss): the pad token, else EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def build_train_dataset(
    cfg: DataConfig, tokenizer, tokenizer_name: str, num_sequences: int | None, target_context: int | None
) -> PackedDataset | PackedStream:
    """The packed training sequences of ``cfg.train_split``.

    ``num_sequences`` (steps x global batch) selects the paper's subset: the first that many
    sequences of the seeded document shuffle; when the corpus packs into fewer, they repeat in
    order (see `PackedDataset`). None packs the whole split. ``target_context`` is s x L of the
    RoPE configuration; a longer ``max_length`` is refused. Map-style (a `PackedDataset` from the
    cache) unless ``cfg.streaming`` (a `PackedStream`, nothing cached). Packing conventions left
    null are this project's (`dprope.data.config.STANDARD`); a training run has resolved them
    for its attention mode already.
    """
    cfg = cfg.resolved()
    if target_context is not None and cfg.max_length > target_context:
        raise ConfigError(
            "data.max_length", f"{cfg.max_length} exceeds the target context s x L = {target_context}"
        )
    if num_sequences is not None and num_sequences <= 0:
        raise ConfigError("num_sequences", f"must be positive or None (got {num_sequences})")
    separators = separator_ids(cfg, tokenizer)
    log.info(
        "data: %s packing, %s, windows of %d tokens for %d targets",
        cfg.packing,
        "EOS after every document" if cfg.add_eos else "no EOS",
        cfg.window,
        cfg.max_length if cfg.extra_target else cfg.max_length - 1,
    )
    split, split_field = cfg.train_split, "data.train_split"
    if cfg.streaming:
        documents = load_documents(cfg, split, split_field, streaming=True)
        return PackedStream(
            documents,
            tokenizer,
            separators,
            cfg.max_length,
            cfg.drop_tail,
            pad_id(tokenizer),
            cfg.batch_size,
            cfg.seed,
            cfg.shuffle_buffer,
            num_sequences,
            cfg.processes,
            cfg.steady_memory,
            extra_target=cfg.extra_target,
            pieces=cfg.packing == "pieces",
        )
    key = cache.cache_key(
        cfg,
        split,
        source_fingerprint(cfg, split, split_field),
        tokenizer_fingerprint(tokenizer),
        num_sequences,
    )
    path = cache.cache_location(cfg, split, key)
    with cache.locked(path):
        meta = cache.read_meta(path, pinned=bool(cfg.cache_path))
        if meta is not None:
            cache.check_key(cfg, path, meta, key, tokenizer_name)
            log.info("data: reusing %s (%d tokens)", path, meta["num_tokens"])
            return PackedDataset(path, num_sequences, from_cache=True)
        log.info(
            "data: tokenizing split %r into %s (once for these settings; later runs reuse it)", split, path
        )
        documents = load_documents(cfg, split, split_field, streaming=False)
        try:
            with cache.staging(path) as partial:
                meta = {"key": key, "tokenizer_name": tokenizer_name, "pad_id": pad_id(tokenizer)}
                need = None if num_sequences is None else num_sequences * cfg.window
                meta = _tokenize_into(cfg, documents, tokenizer, separators, need, partial, meta)
                if meta["num_tokens"] < (cfg.window if cfg.drop_tail else 1):
                    raise ConfigError(
                        "data.max_length",
                        f"the split packs into no sequence of {cfg.window} tokens ({meta['num_tokens']} in all)",
                    )
        except NoSpaceError as err:
            field = "data.cache_path" if cfg.cache_path else "data.cache_dir"
            raise ConfigError(field, f"{err} (free space, or point {field} at a larger disk)") from None
    unit = "pieces" if cfg.packing == "pieces" else "documents"  # a cut document: a piece per window
    log.info("data: built %s (%d %s, %d tokens)", path, meta["num_documents"], unit, meta["num_tokens"])
    return PackedDataset(path, num_sequences, from_cache=False)


def _tokenize_into(
    cfg: DataConfig, documents, tokenizer, separators, need: int | None, directory: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    """Shuffle, tokenize and join the documents into ``directory``; stop once ``need`` tokens exist."""
    dtype = token_dtype(len(tokenizer))
    batches = (batch["text"] for batch in documents.shuffle(seed=cfg.seed).iter(batch_size=cfg.batch_size))
    writer = cache.TokenWriter(directory, dtype)
    encoded = encoded_batches(batches, tokenizer, separators, dtype, cfg.processes, cfg.batch_size)
    joined = piece_batches(encoded, cfg.window, separators[0]) if cfg.packing == "pieces" else encoded
    with closing(encoded):  # stopping early cancels the calls still queued
        for tokens, lengths in joined:
            writer.append(tokens, lengths)
            if need is not None and writer.num_tokens >= need:
                break
    return writer.close(meta, max_tokens=need)
