"""Shared plumbing for the Hydra entry points in `launch/`.

`hydra_main(config_name)` is `hydra.main` plus two guarantees every entry point owes its user:
an unknown option of a config group (`rope=foo`, `+experiment=bar`) and any `ConfigError` raised
while building the typed configs end the run with a one-line ``error: <field>: <message>`` and
exit code 2, before anything expensive happens and without a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

from dprope.config import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
EXIT_CONFIG_ERROR = 2


def fail(message: str, code: int = EXIT_CONFIG_ERROR) -> None:
    """Print a one-line error on stderr and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the yaml files of a config group (`rope` -> ['dprope', 'none', ...])."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def check_group_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Refuse `group=option` overrides whose option has no yaml file, naming the group.

    Hydra itself would report this too, but over several lines and only after composing; this
    check gives the promised one-line error. Overrides of plain keys (`rope.factor=4`) pass.
    """
    for arg in argv:
        if "=" not in arg or arg.startswith("hydra") or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+~")
        if "." in group or not (config_dir / group).is_dir():
            continue
        choices = [v.strip() for v in value.strip("[]").split(",")] if value.startswith("[") else [value]
        if "," in value and not value.startswith("["):
            choices = value.split(",")  # a multirun sweep: each option must exist
        options = group_options(group, config_dir)
        for choice in choices:
            if choice and choice != "null" and choice not in options:
                fail(f"{group}: unknown option '{choice}' (available: {', '.join(options)})")


def hydra_main(config_name: str) -> Callable[[Callable[..., object]], Callable[[], object]]:
    """Decorator for an entry point: `@hydra_main("analyze") def main(cfg): ...`."""
    import hydra

    def decorate(task: Callable[..., object]) -> Callable[[], object]:
        @functools.wraps(task)
        def guarded(cfg):
            try:
                return task(cfg)
            except ConfigError as err:
                fail(str(err))

        hydra_entry = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base=None)(
            guarded
        )

        @functools.wraps(task)
        def entry():
            # the `deepspeed` launcher appends --local_rank=N; the rank is also in LOCAL_RANK
            sys.argv = [a for a in sys.argv if not a.startswith("--local_rank")]
            check_group_overrides(sys.argv[1:])
            return hydra_entry()

        return entry

    return decorate
