"""The data configuration: `DataConfig` is the schema of `configs/data/*.yaml` (the presets
override its defaults, which are the embedded corpus's).

Three sources, chosen by the explicit ``source`` key (never by which keys happen to be set):

- ``hub``: ``datasets.load_dataset(hub_id, hub_config, revision=...)``: PG19 by default; a
  parquet mirror, or a local directory laid out like one, goes through the very same call;
- ``files``: local ``.txt`` (one file = one document), ``.jsonl``/``.json`` and ``.parquet``
  files, given per split as paths or globs;
- ``embedded``: the Python standard library's own source files, present on every machine
  (`dprope.data.embedded`), for ``make demo`` and the tests.

Three packing conventions (`PackingConventions`) may be left null, and then follow the attention
mode of the run (``trainer.attention``; `dprope.train.attention`): ``add_eos``, ``packing`` and
``extra_target``. `STANDARD` is this project's packing, `ANCHORCONTEXT` the AnchorAttention
authors' (Wang et al. 2024, their public training code), the default of ``trainer.attention=anchor``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, from_mapping

SOURCES = ("hub", "files", "embedded")
PACKINGS = ("stream", "pieces")
CACHE_ENV = "DPROPE_DATA_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/dprope/data"


@dataclass(frozen=True)
class PackingConventions:
    """How documents become training windows (`dprope.data.packing`)."""

    add_eos: bool  # every document ends with EOS
    packing: str  # stream | pieces (see DataConfig.packing)
    extra_target: bool  # a window reads max_length + 1 tokens: max_length targets, not max_length - 1


STANDARD = PackingConventions(add_eos=True, packing="stream", extra_target=False)
# the AnchorAttention authors' code: no EOS between documents; windows filled document by document,
# a document cut at a window's end going on in the next as a piece with its own BOS, documents and
# pieces of two tokens or fewer left out; T + 1 tokens read for T inputs and T targets
ANCHORCONTEXT = PackingConventions(add_eos=False, packing="pieces", extra_target=True)


@dataclass
class DataConfig:
    """The defaults are the embedded preset (``configs/data/embedded.yaml``), usable with ``model=tiny``."""

    name: str = "embedded"  # display name; also prefixes the cache directory
    source: str = "embedded"  # hub | files | embedded (see the module docstring)
    hub_id: str | None = None  # source=hub: a hub dataset id, or a local directory laid out like one
    hub_config: str | None = None  # source=hub: the dataset's configuration name; null = its default
    revision: str | None = None  # source=hub: branch, tag or commit (pin it: the key sees only this string)
    paths: dict[str, Any] = field(default_factory=dict)  # source=files: split -> a file, glob or list of them
    text_field: str = "text"  # column holding each document's text
    train_split: str = "train"  # split packed for training
    eval_splits: list[str] = field(default_factory=lambda: ["validation", "test"])  # for eval_documents
    max_documents: int | None = None  # read only the first N documents of a split (source order)
    max_length: int = 512  # tokens per training sequence, at most s x L (paper: 8192 at s=2, 16384 at s=4)
    add_bos: bool = True  # each packed document starts with BOS (as LLaMA's tokenizer does alone)
    # packing conventions (dprope.data.packing); null = the attention mode's (anchor: the authors')
    add_eos: bool | None = None  # each packed document ends with EOS (anchor: no EOS)
    packing: str | None = None  # stream (cut every max_length tokens) | pieces (the authors'; anchor)
    extra_target: bool | None = None  # read max_length + 1 tokens: max_length targets, not - 1 (anchor)
    drop_tail: bool = True  # drop the last, partial sequence; false = keep it padded (padding unlabelled)
    seed: int = 0  # document shuffle before packing
    streaming: bool = False  # tokenize and pack on the fly, nothing cached (corpora larger than memory)
    shuffle_buffer: int = 1000  # streaming: documents held by the approximate shuffle
    steady_memory: bool = True  # streaming: fixed malloc thresholds, Arrow's system pool (dprope.data.memory)
    batch_size: int = 64  # documents per tokenizer call
    num_proc: int | None = None  # tokenizing threads (cache build and stream); null = the CPUs (<= 16)
    cache_dir: str | None = None  # null = $DPROPE_DATA_CACHE, else ~/.cache/dprope/data
    cache_path: str | None = None  # this exact cache directory (built if absent; must match if present)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("source", f"unknown source {self.source!r} (available: {', '.join(SOURCES)})")
        if self.source == "hub" and not self.hub_id:
            raise ConfigError("hub_id", "must be set when source is 'hub'")
        self.paths = _normalise_paths(self.paths)
        if self.source == "files" and not any(self.paths.values()):
            raise ConfigError("paths", "must name files for at least one split when source is 'files'")
        if not self.text_field:
            raise ConfigError("text_field", "must be a column name")
        if self.max_length <= 0:
            raise ConfigError("max_length", f"must be positive (got {self.max_length})")
        if self.packing is not None and self.packing not in PACKINGS:
            raise ConfigError(
                "packing", f"must be one of {', '.join(PACKINGS)} or null (got {self.packing!r})"
            )
        for name in ("max_documents", "num_proc"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(name, f"must be positive or null (got {value})")
        for name in ("shuffle_buffer", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive (got {getattr(self, name)})")
        if self.train_split in self.eval_splits:
            raise ConfigError("eval_splits", f"must not contain the training split {self.train_split!r}")

    def resolved(self, conventions: PackingConventions = STANDARD) -> DataConfig:
        """This config with each packing convention left null taken from ``conventions``."""
        chosen = {
            name: getattr(conventions, name)
            for name in ("add_eos", "packing", "extra_target")
            if getattr(self, name) is None
        }
        return replace(self, **chosen) if chosen else self

    @property
    def window(self) -> int:
        """Tokens read per training window: max_length, plus one with ``extra_target``."""
        return self.max_length + bool(self.extra_target)

    @property
    def cache_root(self) -> Path:
        """Where processed datasets live: ``cache_dir``, else $DPROPE_DATA_CACHE, else the default."""
        return Path(self.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()

    @property
    def processes(self) -> int:
        """Tokenizing threads: ``num_proc``, else the CPUs this process may use (at most 16)."""
        return self.num_proc or min(
            16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        )


def _normalise_paths(paths: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{split: path | [paths]}`` -> ``{split: [paths]}``; anything else is a ConfigError on ``paths``."""
    normal = {}
    for split, value in paths.items():
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
            raise ConfigError("paths", f"split {split!r}: expected a path or a list of paths, got {value!r}")
        normal[str(split)] = list(items)
    return normal


def data_config(mapping: Mapping[str, Any] | None) -> DataConfig:
    """`DataConfig` from a plain mapping (``OmegaConf.to_container(cfg.data)``); errors name ``data.<field>``."""
    return from_mapping(DataConfig, mapping, prefix="data")


EMBEDDED = DataConfig()  # `data=embedded`; derive variants with dataclasses.replace, never by mutating it
