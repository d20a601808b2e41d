"""The on-disk cache of packed training data: one directory per key, published atomically.

Layout of ``<cache_root>/<name>-<split>-<max_length>-<digest>/`` (or ``cache_path``)::

    tokens.bin       the packed token stream, raw uint16 (uint32 for vocabularies over 65536)
    doc_offsets.npy  int64 position of each document's first token in the stream
    meta.json        the key, the tokenizer's name, token and document counts
    COMPLETE         written last

The key holds everything that changes the stored tokens: the source (hub id, configuration and
revision, or each file's path, size and modification time), split, text field, document cap,
the tokenizer's fingerprint, max_length, separators, tail rule, seed and the number of sequences,
and the packing and extra target when they are not the stream packing's (`DataConfig.packing`).
Its hash names the directory, so a changed key is simply another directory.

A build writes into a hidden ``.<name>.partial-<pid>`` sibling under a file lock, writes
COMPLETE, then renames it into place: a reader never sees a half-written directory, a directory
without COMPLETE (a crash of a copy, a hand-made one) is rebuilt, and ranks that start together
wait for the first one's build instead of repeating it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dprope.config import ConfigError
from dprope.data.config import DataConfig
from dprope.data.sources import SOURCE_FIELD
from dprope.storage import NoSpaceError, newest_file, no_space

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the packing rule changes
TOKENS, DOC_OFFSETS, META, COMPLETE = "tokens.bin", "doc_offsets.npy", "meta.json", "COMPLETE"


def cache_key(
    cfg: DataConfig, split: str, source: dict[str, Any], tokenizer_hash: str, num_sequences: int | None
) -> dict[str, Any]:
    """Everything that changes the stored tokens, as plain JSON values (packing conventions left
    null are the standard ones, as `dprope.data.build` resolves them)."""
    cfg = cfg.resolved()
    key = {
        "format": FORMAT,
        "source": cfg.source,
        **source,
        "train_split": split,
        "text_field": cfg.text_field,
        "max_documents": cfg.max_documents,
        "tokenizer": tokenizer_hash,
        "max_length": cfg.max_length,
        "add_bos": cfg.add_bos,
        "add_eos": cfg.add_eos,
        "drop_tail": cfg.drop_tail,
        "seed": cfg.seed,
        "num_sequences": num_sequences,
    }
    if cfg.packing != "stream" or cfg.extra_target:  # only then: caches of the stream packing keep their keys
        key.update(packing=cfg.packing, extra_target=cfg.extra_target)
    return json.loads(json.dumps(key))  # tuples -> lists, as they read back from meta.json


def cache_location(cfg: DataConfig, split: str, key: dict[str, Any]) -> Path:
    if cfg.cache_path:
        return Path(cfg.cache_path).expanduser()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cfg.cache_root / f"{cfg.name}-{split}-{cfg.max_length}-{digest}"


def read_meta(path: Path, pinned: bool = False) -> dict[str, Any] | None:
    """The metadata of a complete, undamaged cache directory; None when it is absent, incomplete
    or damaged (the caller rebuilds it, with a warning). A damaged ``pinned`` directory (the
    user's ``data.cache_path``) is not rebuilt behind the user's back: a one-line error."""
    if not (path / COMPLETE).is_file():
        if path.exists():
            log.warning("data cache %s is incomplete (no %s): rebuilding it", path, COMPLETE)
        return None
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as err:
        meta, problem = None, f"{META} is unreadable ({err})"
    else:
        problem = damage(path, meta)
    if problem is None:
        return meta
    if pinned:
        raise ConfigError("data.cache_path", f"{path} is damaged: {problem} (delete it to rebuild it)")
    log.warning("data cache %s is damaged (%s): rebuilding it", path, problem)
    return None


def damage(path: Path, meta: dict[str, Any]) -> str | None:
    """What is wrong with a complete cache's files against its metadata, or None. Sizes and the
    offsets' header only, no data read: cheap enough for every open (a truncated ``tokens.bin``
    would otherwise fail only when the run reads past its end, after the model has loaded)."""
    try:
        dtype, num_tokens, num_documents = np.dtype(meta["dtype"]), meta["num_tokens"], meta["num_documents"]
    except (KeyError, TypeError) as err:
        return f"{META} lacks {err}"
    for name in (TOKENS, DOC_OFFSETS):
        if not (path / name).is_file():
            return f"{name} is missing"
    size, expected = (path / TOKENS).stat().st_size, num_tokens * dtype.itemsize
    if size != expected:
        return f"{TOKENS} has {size} bytes, {META} says {num_tokens} {dtype.name} tokens ({expected} bytes)"
    try:
        offsets = np.load(path / DOC_OFFSETS, mmap_mode="r")
    except (OSError, ValueError) as err:
        return f"{DOC_OFFSETS} is unreadable ({err})"
    if offsets.shape != (num_documents,):
        return f"{DOC_OFFSETS} holds {offsets.shape[0]} offsets, {META} says {num_documents} documents"
    return None


def check_key(
    cfg: DataConfig, path: Path, meta: dict[str, Any], key: dict[str, Any], tokenizer_name: str
) -> None:
    """Refuse a complete cache built from another configuration, naming the first differing field."""
    recorded = meta["key"]
    for name, value in key.items():
        if recorded.get(name) == value:
            continue
        if name == "tokenizer":
            raise ConfigError(
                "model.tokenizer",
                f"{tokenizer_name!r} (fingerprint {value}) differs from the tokenizer {path} was built with "
                f"({meta.get('tokenizer_name')!r}, fingerprint {recorded.get(name)})",
            )
        field = {"files": SOURCE_FIELD[cfg.source], "python": "data.source", "format": "data.cache_path"}
        field["num_sequences"] = "num_sequences"
        raise ConfigError(
            field.get(name, f"data.{name}"),
            f"{path} was built with {name}={recorded.get(name)!r}, not {value!r}",
        )


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the build lock of a cache directory (a sibling ``.lock`` file)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"))
    if not lock.acquire(blocking=False):
        log.info("waiting for another process building %s", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def staging(path: Path) -> Iterator[Path]:
    """A fresh partial directory, published as ``path`` (with COMPLETE) if the block succeeds.

    Call it holding `locked(path)`: any partial directory left beside ``path`` is then a crashed
    build's and is removed first; on an exception the partial directory is removed too, and a
    full disk becomes a `NoSpaceError` naming the file being written.
    """
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        log.warning("removing %s left by an interrupted build", stale)
        shutil.rmtree(stale, ignore_errors=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    partial.mkdir(parents=True)
    try:
        yield partial
        (partial / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        if path.exists():
            shutil.rmtree(path)
        os.rename(partial, path)
    except BaseException as err:
        culprit = newest_file(partial) if no_space(err) else None
        shutil.rmtree(partial, ignore_errors=True)
        if culprit is not None:
            raise NoSpaceError(culprit, "the partial cache was removed") from err
        raise


class TokenWriter:
    """Appends packed-stream pieces to ``tokens.bin``; `close` writes the document offsets and meta."""

    def __init__(self, directory: Path, dtype: np.dtype):
        self.directory = directory
        self.dtype = dtype
        self.file = open(directory / TOKENS, "wb")
        self.lengths: list[np.ndarray] = []
        self.num_tokens = 0

    def append(self, tokens: np.ndarray, doc_lengths: np.ndarray) -> None:
        # a Python write, not ndarray.tofile: a full disk then raises OSError(ENOSPC), not
        # "N requested and M written"
        self.file.write(memoryview(np.ascontiguousarray(tokens, dtype=self.dtype)))
        self.lengths.append(np.asarray(doc_lengths, dtype=np.int64))
        self.num_tokens += len(tokens)

    def close(self, meta: dict[str, Any], max_tokens: int | None = None) -> dict[str, Any]:
        """Finish the files, keeping at most ``max_tokens`` tokens (and the documents starting before)."""
        num_tokens = self.num_tokens if max_tokens is None else min(max_tokens, self.num_tokens)
        self.file.truncate(num_tokens * self.dtype.itemsize)
        self.file.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
        offsets = offsets[offsets < num_tokens]
        buffer = io.BytesIO()  # np.save to a file writes with tofile (no errno on a full disk)
        np.save(buffer, offsets)
        (self.directory / DOC_OFFSETS).write_bytes(buffer.getvalue())
        meta = {**meta, "dtype": self.dtype.name, "num_tokens": num_tokens, "num_documents": len(offsets)}
        (self.directory / META).write_text(json.dumps(meta, indent=1))
        return meta
