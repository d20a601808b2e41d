"""Raw documents of one split, through `datasets.load_dataset`, checked before any tokenization.

``hub`` is ``load_dataset(hub_id)`` (a hub id, or a local directory laid out like a hub parquet
repository), ``files`` is ``load_dataset("text" | "json" | "parquet", data_files=...)``, and the
``embedded`` corpus is read into `datasets.Dataset.from_dict` (or a generator stream). The
result has a single column, ``text``. Downloads and `datasets`' Arrow copies go under
``<cache_root>/datasets``, so everything this module writes lives under one directory.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import sys
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line
from dprope.data.config import DataConfig
from dprope.data.embedded import EMBEDDED_SPLITS, embedded_dataset, embedded_files
from dprope.inputs import TEXT_HEAD, check_text, existing_file

log = logging.getLogger(__name__)

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SOURCE_FIELD = {  # the field to blame for an empty or changed source
    "hub": "data.hub_id",
    "files": "data.paths",
    "embedded": "data.source",
}


def resolve_files(cfg: DataConfig, split: str, split_field: str) -> list[Path]:
    """The files of a split: ``paths`` (source=files) with globs expanded, or the embedded corpus.

    A split without files, a glob matching nothing, a missing file or an unknown extension is a
    ConfigError naming ``data.paths`` (or ``split_field`` for the embedded corpus).
    """
    if cfg.source == "embedded":
        if split not in EMBEDDED_SPLITS:
            raise ConfigError(
                split_field, f"the embedded corpus has no split {split!r} ({', '.join(EMBEDDED_SPLITS)})"
            )
        return [Path(p) for p in embedded_files(split)[: cfg.max_documents]]  # one file, one document
    patterns = cfg.paths.get(split) or []
    if not patterns:
        raise ConfigError("data.paths", f"no files for split {split!r} (set data.paths.{split})")
    files: list[Path] = []
    for pattern in patterns:
        expanded = str(Path(pattern).expanduser())
        if glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                raise ConfigError("data.paths", f"{pattern!r} matches no file")
            files.extend(existing_file(m, "data.paths") for m in matches)  # a directory is named
        elif Path(expanded).is_dir():
            raise ConfigError(
                "data.paths", f"{pattern} is a directory, not a file (list its files: '{pattern}/*.txt')"
            )
        else:
            files.append(existing_file(expanded, "data.paths"))
    for path in files:
        if path.suffix.lower() not in BUILDERS:
            raise ConfigError("data.paths", f"{path.name}: unsupported file type (use {', '.join(BUILDERS)})")
    nonempty = [path for path in files if not _is_empty(path)]  # `datasets` fails on empty files
    if not nonempty:
        raise ConfigError(
            "data.paths", f"split {split!r} holds no document (its {len(files)} files are empty)"
        )
    return nonempty


def _is_empty(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    if path.suffix.lower() == ".parquet":
        return parquet_metadata(path).num_rows == 0
    return False


def parquet_metadata(path: Path):
    """A Parquet file's footer, or a ConfigError naming the file when it cannot be read."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except Exception as err:  # ArrowInvalid, OSError: truncated, damaged or not Parquet at all
        raise ConfigError("data.paths", f"{path}: not a readable Parquet file ({first_line(err)})") from None


def check_files(files: list[Path], streaming: bool) -> None:
    """Every text file (.txt, .jsonl, .json) is UTF-8 text, no binary file: the whole file when
    the split is loaded (`datasets` reads it all anyway), its first 64 KiB when streamed (a bad
    byte further in is found when the stream reaches it)."""
    for path in files:
        if BUILDERS[path.suffix.lower()] != "parquet":
            check_text(path, "data.paths", TEXT_HEAD if streaming else None)


@contextlib.contextmanager
def _builder_errors_reported_here():
    """The `datasets` file builders log a file they fail on, then raise; the raise becomes one
    ConfigError naming the file (`_unreadable_file`), so their log line would say it twice."""
    builders = logging.getLogger("datasets.packaged_modules")
    level = builders.level
    builders.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        builders.setLevel(level)


def _unreadable_file(files: list[str], builder: str) -> ConfigError | None:
    """After `datasets` failed on ``files`` together: the first one that fails alone, named."""
    for name in files:
        try:
            _read_alone(Path(name), builder)
        except ConfigError as err:
            return err
        except Exception as err:  # whatever the reader raises, the file is what to name
            return ConfigError("data.paths", f"{name}: cannot be read as {builder} ({first_line(err, True)})")
    return None


def _read_alone(path: Path, builder: str) -> None:
    """Read one file as ``builder`` would: Parquet in full; JSON as JSON lines, or as one document."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        pq.ParquetFile(path).read()
    elif builder == "json":
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError as err:
                try:
                    json.loads(text)  # a .json file may be one document
                except json.JSONDecodeError:
                    raise ConfigError("data.paths", f"{path}:{number}: not valid JSON ({err.msg})") from None
                return


def source_fingerprint(cfg: DataConfig, split: str, split_field: str) -> dict[str, Any]:
    """What identifies a split's raw documents, for the cache key: ids and revisions, or the
    files with their sizes and modification times (never their contents: PG19 is 11 GB)."""
    if cfg.source == "hub":
        local = Path(cfg.hub_id).expanduser()  # type: ignore[arg-type]
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
        fingerprint: dict[str, Any] = {
            "hub_id": cfg.hub_id,
            "hub_config": cfg.hub_config,
            "revision": cfg.revision,
        }
    else:
        files = resolve_files(cfg, split, split_field)
        fingerprint = {"python": sys.version.split()[0]} if cfg.source == "embedded" else {}
    fingerprint["files"] = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return fingerprint


def load_documents(cfg: DataConfig, split: str, split_field: str, streaming: bool | None = None):
    """A `datasets.Dataset` (or `IterableDataset` when streaming) of the split's documents, with
    the one column ``text``; at most ``cfg.max_documents`` of them, in source order.

    The text field and a non-empty corpus are checked here, before any tokenization.
    """
    streaming = cfg.streaming if streaming is None else streaming
    if cfg.source == "hub":
        dataset = _load_hub(cfg, split, split_field, streaming)
    elif cfg.source == "embedded":
        dataset = embedded_dataset([str(p) for p in resolve_files(cfg, split, split_field)], streaming)
    else:
        files = resolve_files(cfg, split, split_field)
        check_files(files, streaming)
        dataset = _load_files(cfg, files, streaming)
    if cfg.max_documents is not None:
        dataset = (
            dataset.take(cfg.max_documents)
            if streaming
            else dataset.select(range(min(cfg.max_documents, len(dataset))))
        )
    if cfg.text_field != "text":
        dataset = dataset.rename_column(cfg.text_field, "text")
    if (next(iter(dataset), None) is None) if streaming else len(dataset) == 0:
        raise ConfigError(SOURCE_FIELD[cfg.source], f"split {split!r} holds no document")
    return dataset


def _load_hub(cfg: DataConfig, split: str, split_field: str, streaming: bool):
    """What ``load_dataset(hub_id, hub_config, revision=..., split=...)`` does, with the split
    checked against the repository's before anything is downloaded."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(
            cfg.hub_id, cfg.hub_config, revision=cfg.revision, cache_dir=str(cfg.cache_root / "datasets")
        )
        splits = list(builder.info.splits or builder.config.data_files or [])
        if splits and split not in splits:
            raise ConfigError(
                split_field, f"{cfg.hub_id} has no split {split!r} (splits: {', '.join(splits)})"
            )
        if streaming:
            dataset = builder.as_streaming_dataset(split=split)
        else:
            builder.download_and_prepare()
            dataset = builder.as_dataset(split=split)
    except (OSError, ValueError, RuntimeError) as err:  # not found, offline, a loading-script repository
        if isinstance(err, ConfigError):
            raise
        message = first_line(err, with_type=True)
        if "scripts are no longer supported" in message:
            message += " (use its parquet export, data.revision=refs/convert/parquet, or a mirror such as emozilla/pg19)"
        raise ConfigError("data.hub_id", f"cannot load {cfg.hub_id!r}: {message}") from None
    return _text_column(dataset, cfg, f"split {split!r} of {cfg.hub_id}")


def _load_files(cfg: DataConfig, files: list[Path], streaming: bool):
    """One ``load_dataset("text" | "json" | "parquet", data_files=...)`` per file type, in the order
    the types first appear, then concatenated."""
    import datasets

    by_builder: dict[str, list[str]] = {}
    for path in files:
        by_builder.setdefault(BUILDERS[path.suffix.lower()], []).append(str(path))
    parts = []
    for builder, data_files in by_builder.items():
        options: dict[str, Any] = {"sample_by": "document"} if builder == "text" else {}
        try:
            with _builder_errors_reported_here():
                part = datasets.load_dataset(
                    builder,
                    data_files={"train": data_files},
                    split="train",
                    streaming=streaming,
                    cache_dir=str(cfg.cache_root / "datasets"),
                    **options,
                )
                if streaming:  # a stream reads its files only when iterated: its first rows, here
                    next(iter(part), None)
        except Exception as err:  # a malformed file: name the field and the file, not the parser's internals
            named = _unreadable_file(data_files, builder)
            if named is not None:
                raise named from None
            cause = err.__cause__ or err
            raise ConfigError(
                "data.paths", f"cannot read the {builder} files: {first_line(cause, with_type=True)}"
            ) from None
        parts.append(_text_column(part, cfg, f"the {builder} files"))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _text_column(dataset, cfg: DataConfig, where: str):
    """The dataset reduced to its text field, which must exist (a stream without a declared
    schema shows its columns on its first row)."""
    columns = dataset.column_names
    if columns is None:
        first = next(iter(dataset), None)
        columns = None if first is None else list(first)
    if columns is not None and cfg.text_field not in columns:
        raise ConfigError(
            "data.text_field", f"no column {cfg.text_field!r} in {where} (columns: {list(columns)})"
        )
    dataset = dataset.select_columns([cfg.text_field])
    _check_strings(dataset, cfg.text_field, where)
    return dataset


def _check_strings(dataset, name: str, where: str) -> None:
    """The text column holds strings only: its type when `datasets` knows it (a JSON field of
    mixed types is a ``Json`` column), and, for a loaded split, no missing value. The first
    offending row is named where a loaded split allows it."""
    import datasets

    feature = (dataset.features or {}).get(name)
    if feature is None or (
        isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    ):
        if isinstance(dataset, datasets.Dataset) and dataset.data.column(name).null_count:
            row = dataset.data.column(name).to_pylist().index(None)
            raise ConfigError("data.text_field", f"{name!r} of {where} is missing in row {row} (null)")
        return
    kind = (
        f"{feature.dtype} values" if isinstance(feature, datasets.Value) else "JSON values of several types"
    )
    if isinstance(dataset, datasets.Dataset):
        for i, value in enumerate(dataset[name]):
            if not isinstance(value, str):
                kind = f"row {i} holds {type(value).__name__} {json.dumps(value)[:40]}"
                break
    raise ConfigError("data.text_field", f"{name!r} of {where} must hold strings ({kind})")
