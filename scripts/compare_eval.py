"""Put several evaluated models side by side: one headline table, then one table and one plot per benchmark.

    python scripts/compare_eval.py outputs/eval/pi-16k/<run> outputs/eval/yarn-16k/<run> \
        outputs/eval/ours-16k/<run> --names pi yarn ours --output outputs/compare/16k

Each argument is a run directory of `launch/eval.py` (or its results.json). The headline table has
one row per run and each benchmark's headline numbers (LongBench-E and LongBench v2 averages, RULER
per length and its effective length, BABILong, passkey accuracy, perplexity per length, the
short-context average), an empty cell where a run lacks one. Writes comparison.md (every table),
comparison.csv (the headline table), comparison.json and <benchmark>.png to --output and prints
the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dprope.cli import fail
from dprope.config import ConfigError
from dprope.eval.compare import write_comparison


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (or results.json files) of launch/eval.py")
    parser.add_argument("--names", nargs="+", help="one label per run (default: each run's model.name)")
    parser.add_argument("--output", default="outputs/compare", help="directory for the table and plots")
    args = parser.parse_args(argv)
    try:
        markdown, paths = write_comparison(args.runs, Path(args.output), args.names)
    except ConfigError as err:
        fail(str(err))
    print(markdown)
    for path in paths:
        print(f"wrote: {path}")


if __name__ == "__main__":
    main()
