"""The embedded corpus: the Python standard library's own source files.

Every machine that runs dprope has them, so ``make demo`` and the tests need no download: about
a thousand real documents, 14 MB in CPython 3.11, many of them tens of thousands of tokens long
under the byte tokenizer. The test suite (``test/``) and installed packages (``site-packages``)
are left out: the first is absent from some distributions, the second differs between machines.

Each file goes to one split by a hash of its path inside the library, so the split of a file
never changes when others are added or removed: 90% train, 5% validation, 5% test.
"""

from __future__ import annotations

import functools
import hashlib
import sysconfig
from pathlib import Path

EMBEDDED_SPLITS = ("train", "validation", "test")
_EXCLUDED_TOP = {"test", "site-packages", "dist-packages"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """The split of a file, from a stable hash of its path inside the standard library."""
    bucket = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:4], "big") % 100
    return "test" if bucket < 5 else "validation" if bucket < 10 else "train"


@functools.cache
def embedded_files(split: str) -> tuple[str, ...]:
    """Absolute paths of the split's files, sorted by their path inside the standard library."""
    root = stdlib_root()
    found = []
    for top in root.iterdir():
        if top.name in _EXCLUDED_TOP:
            continue
        found.extend([top] if top.suffix == ".py" else top.rglob("*.py") if top.is_dir() else [])
    relative = sorted(path.relative_to(root).as_posix() for path in found)
    return tuple(str(root / name) for name in relative if split_of(name) == split)


def embedded_dataset(paths: list[str], streaming: bool):
    """The files as a `datasets` dataset with the one column ``text``: in memory (14 MB at most),
    or a stream reading one file at a time (each file a shard, so a shuffle reorders them)."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string")})
    if streaming:
        return datasets.IterableDataset.from_generator(
            _rows, features=features, gen_kwargs={"paths": list(paths)}
        )
    return datasets.Dataset.from_dict({"text": [_read(path) for path in paths]}, features=features)


def _rows(paths: list[str]):
    for path in paths:
        yield {"text": _read(path)}


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace")
