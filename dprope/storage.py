"""A full disk while writing: told apart from other failures and reported as one line naming the file.

Checkpoints (`dprope.train.checkpoint`), the export (`dprope.train.export`) and the data cache
(`dprope.data.cache`) write large files; when the disk fills up the libraries underneath report
it in their own words (torch's zip writer as ``[enforce fail at inline_container.cc:672] .
unexpected pos``, with the OSError only in the exception's context; safetensors as ``I/O error:
No space left on device (os error 28)``; numpy's ``tofile`` as ``N requested and M written``,
with no errno at all). `no_space` recognises the first two; the writers here write through Python
file objects, so the OSError and its errno are always in the chain. `NoSpaceError` names the file
being written and says what is kept.
"""

from __future__ import annotations

import errno
from pathlib import Path

# a full file system, an exceeded quota, the process's file-size limit (RLIMIT_FSIZE)
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# the same, as libraries that do not re-raise the OSError spell it (Rust's io::Error among them)
NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def no_space(err: BaseException | None) -> bool:
    """Whether ``err``, or an exception it was raised from or during, is a full disk."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(err) for text in NO_SPACE_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


class NoSpaceError(Exception):
    """The disk filled up writing ``path``; ``kept`` says what survives (one clause)."""

    def __init__(self, path: str | Path, kept: str):
        self.path, self.kept = Path(path), kept
        super().__init__(f"no space left on device writing {path}; {kept}")


def newest_file(directory: Path, suffix: str = "") -> Path:
    """The file last written under ``directory`` (with ``suffix``): the one a failed writer was
    filling. Files written within one tick of the file system's clock tie; the larger wins (a
    weights file being filled, not the small config written just before it). The directory
    itself when it holds no such file."""
    files = [p for p in directory.rglob(f"*{suffix}") if p.is_file()] if directory.is_dir() else []
    if not files:
        return directory
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.stat().st_size))
