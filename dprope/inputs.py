"""The files a command reads, checked before any expensive work: each bad one is a `ConfigError`
naming the config field and the file, so the command ends in one line (exit 2).

- `existing_file`, `existing_dir`: a path of the wrong kind says what it is (a directory given
  where a file belongs, and the reverse), a missing one that it is missing.
- `text_problem`, `read_text`: a binary file (a NUL byte) or one that is not UTF-8 (the first byte
  that does not decode), with its offset, instead of a decoder's traceback or replaced characters.
- `check_safetensors`: every safetensors file of a model directory holds the data its header
  announces (a truncated download or export is caught from the header, without reading the
  weights), and every shard its index names exists.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from dprope.config import ConfigError, first_line

CHUNK = 1 << 20  # bytes read at a time when a text file is checked
TEXT_HEAD = 1 << 16  # bytes checked up front where a whole file would cost too much


def existing_file(name: str | Path, field: str) -> Path:
    """``name`` as a path to an existing regular file, else a ConfigError saying what it is."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise ConfigError(field, f"{name} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(field, f"no such file: {name}")
    return path


def existing_dir(name: str | Path, field: str) -> Path:
    """``name`` as a path to an existing directory, else a ConfigError saying what it is."""
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(field, f"{name} is a file, not a directory")
    if not path.is_dir():
        raise ConfigError(field, f"no directory at {name}")
    return path


def text_problem(path: Path, limit: int | None = None) -> str | None:
    """Why the file at ``path`` is not UTF-8 text, or None: the first problem in the file,
    ``a binary file (NUL byte at offset N)`` or ``not UTF-8 text (byte 0xNN at offset N)`` (a
    multi-byte character cut by the end of the file counts). Reads at most ``limit`` bytes (None:
    the whole file), a chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while limit is None or offset < limit:
            chunk = handle.read(CHUNK if limit is None else min(CHUNK, limit - offset))
            if not chunk:
                break
            nul = chunk.find(b"\0")
            pending = len(decoder.getstate()[0])  # bytes of a character begun in the last chunk
            try:
                decoder.decode(chunk if nul < 0 else chunk[:nul])
            except UnicodeDecodeError as err:
                where = offset - pending + err.start
                return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {where})"
            if nul >= 0:
                begun = decoder.getstate()[0]  # a character the NUL cuts is the first problem
                if begun:
                    return f"not UTF-8 text (byte 0x{begun[0]:02x} at offset {offset + nul - len(begun)})"
                return f"a binary file (NUL byte at offset {offset + nul}), not text"
            offset += len(chunk)
        ended = limit is None or offset < limit or not handle.read(1)
    begun = decoder.getstate()[0]
    if ended and begun:
        return f"not UTF-8 text (a character cut by the end of the file at offset {offset - len(begun)})"
    return None


def check_text(path: Path, field: str, limit: int | None = None) -> None:
    """A ConfigError naming ``path`` when it is binary or not UTF-8 (see `text_problem`)."""
    problem = text_problem(path, limit)
    if problem is not None:
        raise ConfigError(field, f"{path}: {problem}")


def read_text(name: str | Path, field: str) -> str:
    """The UTF-8 text of the file ``name``; a directory, a missing, binary or non-UTF-8 file is
    a ConfigError naming it (its first problem, as `text_problem` finds it)."""
    path = existing_file(name, field)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise ConfigError(field, f"{path}: {text_problem(path)}")
    return text


INDEX = "model.safetensors.index.json"


def check_safetensors(directory: Path, field: str) -> None:
    """Every ``*.safetensors`` file in ``directory`` is whole, and every shard its index names exists.

    `safetensors.safe_open` reads the header and checks that the file covers every tensor's data
    (a truncated file fails here in milliseconds, whatever its size); the weights are not read.
    """
    from safetensors import safe_open

    index = directory / INDEX
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(field, f"{index}: not a safetensors index ({first_line(err)})") from None
        missing = sorted(s for s in shards if not (directory / s).is_file())
        if missing:
            raise ConfigError(
                field, f"{index.name} names {len(missing)} shard(s) missing from {directory}: {missing[0]}"
            )
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as err:  # SafetensorError, OSError: the file is not usable as it is
            raise ConfigError(
                field,
                f"{path}: damaged safetensors file ({first_line(err)}, {path.stat().st_size} bytes); "
                "download or export it again",
            ) from None
