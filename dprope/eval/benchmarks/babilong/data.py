"""BABILong's data, read before the model loads from a local copy of the hub dataset
(RMT-team/babilong-1k-samples, 1000 samples per task and length, or RMT-team/babilong, 100):
``<data_dir>/<length>/<qa>-NNNNN-of-NNNNN.parquet`` (the hub files; the parquet-converter layout
``<length>/<qa>/*.parquet`` is read too), each row with BABILong's ``input`` (the facts hidden in
PG19 text), ``question`` and ``target``. These are the rows lm-eval's ``babilong`` loader reads
from the hub (``load_dataset(<dataset>, name=<length>, split=<qa>)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line
from dprope.eval.benchmarks.babilong.config import LAYOUT, BabilongConfig, default_lengths, tokens_of
from dprope.eval.common import EvalContext, check_length

FIELD = "eval.babilong.data_dir"
COLUMNS = ("input", "question", "target")


@dataclass
class BabilongData:
    lengths: list[str]
    docs: dict[tuple[str, str], list[dict[str, Any]]]  # (qa, length) -> rows, in file order


def split_files(data_dir: str, qa: str, length: str) -> list[Path]:
    root = Path(data_dir).expanduser() / length
    files = sorted(root.glob(f"{qa}-*.parquet")) or sorted((root / qa).glob("*.parquet"))
    if not files:
        only_0k = " (BABILong has qa6-qa20 at 0k only)" if int(qa[2:]) > 5 and length != "0k" else ""
        raise ConfigError(
            FIELD,
            f"no {qa} data at {length}{only_0k}: expected {root / f'{qa}-00000-of-00001.parquet'} ({LAYOUT})",
        )
    return files


def read_split(files: list[Path], limit: int | None) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows = []
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as err:  # pyarrow raises several kinds for a file that is not parquet
            raise ConfigError(FIELD, f"{file}: not a readable parquet file ({first_line(err)})") from None
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise ConfigError(
                FIELD, f"{file}: no column {missing[0]!r} (BABILong rows have {', '.join(COLUMNS)})"
            )
        rows += [{c: str(row[c]) for c in COLUMNS} for row in table.select(list(COLUMNS)).to_pylist()]
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise ConfigError(FIELD, f"{files[0].parent}: no rows")
    return rows[:limit] if limit is not None else rows


def prepare_babilong(cfg: BabilongConfig, ctx: EvalContext) -> BabilongData:
    """Every (task, length) split read and checked; a missing one is an error naming the file expected."""
    if cfg.data_dir is None:
        raise ConfigError(FIELD, f"not set: no BABILong data (expected {LAYOUT})")
    lengths = list(cfg.lengths) if cfg.lengths is not None else default_lengths(ctx.max_positions)
    for length in lengths:
        check_length("eval.babilong.lengths", tokens_of(length), ctx)
    if cfg.max_length is not None:
        check_length("eval.babilong.max_length", cfg.max_length, ctx)
    docs = {}
    for task in cfg.tasks:
        qa = task.name.removeprefix("babilong_")
        for length in lengths:
            docs[qa, length] = read_split(split_files(cfg.data_dir, qa, length), cfg.limit)
    return BabilongData(lengths, docs)
