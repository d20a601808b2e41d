"""Shared plumbing for the Hydra entry points in `launch/` and for `scripts/slurm/submit.py`.

- `register_schemas` makes each config dataclass the schema of its Hydra group (ConfigStore,
  under ``schema/``); every YAML preset starts from it (``defaults: [/schema/<group>@_here_]``)
  and only overrides values.
- `root_schemas` names the root schema of each entry point's config (``configs/<name>.yaml``):
  the dataclass of the typed job its entry point builds, whose fields are the config's only
  top-level keys, so ``+foo=1`` is an unknown key like ``+trainer.foo=1``.
- `check_command_line` parses the overrides with Hydra's own parser, expands every sweep as
  Hydra's basic sweeper does (``choice``, ``range``, ``glob``, comma lists, ``hydra.sweeper.params``
  of a ``+sweep`` preset), composes each job and builds its typed configs, so that an unknown
  option, an unknown key, a type error or a bad value ends the command with one line
  ``error: <field>: <message>`` and exit code 2, before anything expensive happens.
- `hydra_main(config_name, build)` is `hydra.main` plus that check, handing the task its typed
  configs.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
EXIT_CONFIG_ERROR = 2
SCHEMA_GROUP = "schema"
# Hydra's own command-line flags checked here: -m/--multirun, and --config-dir/-cd DIR (a further
# config directory, searched after configs/ as Hydra does); any other flag leaves the command to
# Hydra unchecked (help, config printing, another primary config).
_HYDRA_FLAGS = {"-m", "--multirun"}
_CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def fail(message: str, code: int = EXIT_CONFIG_ERROR) -> None:
    """Print a one-line error on stderr and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def schemas() -> dict[str, Any]:
    """Schema path under ``schema/`` -> dataclass."""
    from dprope.data.config import DataConfig
    from dprope.eval.suite import EvalConfig
    from dprope.model import ModelConfig
    from dprope.reproduce.config import ReproduceConfig
    from dprope.rope.precision_analysis import PrecisionConfig
    from dprope.rope.registry import STRATEGIES
    from dprope.rope.report import AnalysisConfig
    from dprope.tracking import LoggerConfig
    from dprope.train.config import TrainerConfig

    nodes: dict[str, Any] = {
        "model": ModelConfig,
        "data": DataConfig,
        "trainer": TrainerConfig,
        "logger": LoggerConfig,
        "eval": EvalConfig,
        "analysis": AnalysisConfig,
        "precision": PrecisionConfig,
        "reproduce": ReproduceConfig,
    }
    nodes.update({f"rope/{name}": config for name, config in STRATEGIES.items()})
    return nodes


def root_schemas() -> dict[str, type]:
    """Config name -> its root schema: the typed job the entry point builds from it, one field per
    top-level key (``train``: `RunConfig`, for launch/train.py, launch/prepare_data.py and
    scripts/slurm/submit.py; ``evaluate``: `EvalJob`, for launch/eval.py and ``submit.py --eval``)."""
    from dprope.eval.job import EvalJob
    from dprope.reproduce.config import Reproduction
    from dprope.rope.precision_analysis import PrecisionJob
    from dprope.rope.report import AnalysisJob
    from dprope.train.config import RunConfig

    return {
        "train": RunConfig,
        "evaluate": EvalJob,
        "analyze": AnalysisJob,
        "precision": PrecisionJob,
        "reproduction": Reproduction,
    }


def _top_key(override: str) -> str:
    """The top-level config key an override string touches (``+trainer.steps=3`` -> trainer)."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split(".", 1)[0].split("/", 1)[0].split("@", 1)[0]


def check_root(config_name: str, cfg: Any, overrides: list[str], sweep: str | None = None) -> None:
    """Refuse a top-level key that the root schema of ``config_name`` does not declare.

    One exception: a ``+sweep`` preset is shared by launch/train.py and launch/analyze.py, and the
    sections it sets for the training runs (``trainer``, ``data``) mean nothing to an analysis;
    they are left unread, with a note on stderr, unless the command line itself touches them.
    Raises ConfigError naming the key. ``sweep``: the ``+sweep`` choice, when ``cfg`` (a job's
    config inside Hydra) has no ``hydra`` node to read it from.
    """
    import dataclasses

    from omegaconf import OmegaConf

    declared = {f.name for f in dataclasses.fields(root_schemas()[config_name])}
    sweep = sweep or OmegaConf.select(cfg, "hydra.runtime.choices.sweep", default=None)
    from_sweep: set[str] = set()
    if sweep is not None and (CONFIG_DIR / "sweep" / f"{sweep}.yaml").is_file():
        preset = OmegaConf.load(CONFIG_DIR / "sweep" / f"{sweep}.yaml")
        from_sweep = set(preset.keys()) - {"defaults", "hydra"} - {_top_key(o) for o in overrides}
    ignored = []
    for key in cfg.keys():
        if key == "hydra" or key in declared:
            continue
        if key not in from_sweep:
            raise ConfigError(str(key), f"unknown key (known: {', '.join(sorted(declared))})")
        ignored.append(str(key))
    if ignored:
        _note_unread(config_name, sweep, tuple(ignored))


@functools.cache
def _note_unread(config_name: str, sweep: str, keys: tuple[str, ...]) -> None:
    print(
        f"note: +sweep={sweep} sets {', '.join(keys)} for training runs; {config_name} does not read them",
        file=sys.stderr,
        flush=True,
    )


def first_set(*values: Any) -> Any:
    """The first value that is not null (``${dprope.first_set:${eval.output_dir},outputs/eval/...}``):
    a run directory that is the configured output directory when one is set, so Hydra writes
    nothing (``.hydra/``, the log) into ``outputs/`` of the current directory then."""
    return next((v for v in values if v is not None), None)


@functools.cache
def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore, and the configs' resolver (once per process)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dprope.first_set"):
        OmegaConf.register_new_resolver("dprope.first_set", first_set)
    store = ConfigStore.instance()
    for path, node in schemas().items():
        group, _, name = path.rpartition("/")
        store.store(group="/".join(filter(None, (SCHEMA_GROUP, group))), name=name, node=node)


def group_options(group: str) -> list[str]:
    """The presets of a config group (`rope` -> ['dprope', 'llama3', ...])."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def describe(err: BaseException) -> str:
    """Hydra's and OmegaConf's composition errors as one line ``<field>: <what>``."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from dprope.config import omegaconf_error

    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        if group:
            return f"{group}: unknown option '{option}' (available: {', '.join(group_options(group))})"
    if isinstance(err, OverrideParseException):
        return f"overrides: {err.override}: {first_line(err)}"
    syntax = yaml_syntax_error(err)
    if syntax is not None:
        return syntax
    text = first_line(err)
    if text.startswith("Could not override '"):  # a key that does not exist
        return f"{text.split(chr(39))[1]}: unknown key"
    if text.startswith("Could not delete from config. '"):
        return f"{text.split(chr(39))[1]}: cannot be deleted (only a config group can: ~logger)"
    for cause in (err, err.__cause__ or err.__context__):
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            preset = re.match(r"In '([^']+)': ", text)  # a bad value inside a preset: name it too
            return str(omegaconf_error(cause)) + (f" (in {preset.group(1)})" if preset else "")
    return f"overrides: {text}"


def yaml_syntax_error(err: BaseException) -> str | None:
    """``<file>: YAML syntax error at line L, column C: <problem>`` for a config file that does
    not parse (raised by the YAML parser itself, or inside Hydra's composition error), else None."""
    import yaml

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark or err.context_mark
            what = err.problem or err.context or "not valid YAML"
            if mark is None:
                return f"config: YAML syntax error: {what}"
            context = f" ({err.context})" if err.context and err.problem else ""
            return f"{mark.name}: YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}{context}"
        err = err.__cause__ or err.__context__
    return None


@dataclass
class CommandLine:
    overrides: list[str]
    multirun: bool
    checked: bool  # False when a Hydra flag (help, --cfg, another config) leaves the command to Hydra
    config_dir: str | None = None  # --config-dir DIR: a further config directory


def split_command_line(argv: list[str]) -> CommandLine:
    overrides, flags, config_dir = [], [], None
    args = iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name in _CONFIG_DIR_FLAGS:
            config_dir = value if equals else next(args, "")  # the last one counts, as in Hydra
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            overrides.append(arg)
    return CommandLine(
        overrides=overrides,
        multirun=any(f in _HYDRA_FLAGS for f in flags),
        checked=all(f in _HYDRA_FLAGS for f in flags),
        config_dir=config_dir,
    )


def search_path_override(config_dir: str | None) -> list[str]:
    """``--config-dir DIR`` as the override that puts DIR where Hydra puts it: after configs/,
    before the schemas (``hydra.searchpath``). A missing DIR, or a file, is a ConfigError."""
    if config_dir is None:
        return []
    from dprope.inputs import existing_dir

    path = existing_dir(config_dir, "--config-dir").resolve()
    return ["hydra.searchpath=['file://" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "']"]


@contextlib.contextmanager
def hydra_context(job_name: str) -> Iterator[Any]:
    """Hydra initialised on the project's configs; yields its config loader (for ``glob``)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None, job_name=job_name):
        yield GlobalHydra.instance().config_loader()


def compose_job(config_name: str, overrides: list[str], job_num: int = 0):
    """One job's config, its ``hydra`` node included and set as the current Hydra config, so
    ``${hydra:...}`` interpolations resolve; raises ConfigError on any composition error."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    try:
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception as err:  # Hydra raises several kinds; each means a bad override
        raise ConfigError(*describe(err).split(": ", 1)) from None
    check_root(config_name, cfg, overrides)
    with open_dict(cfg):
        cfg.hydra.job.num = job_num
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_config(config_name: str, overrides: list[str] | tuple[str, ...] = ()):
    """A composed config (schemas registered, overrides applied) without its ``hydra`` node, for
    tests and scripts; raises ConfigError on a bad override."""
    from omegaconf import open_dict

    with hydra_context(config_name):
        cfg = compose_job(config_name, list(overrides))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _parse(overrides: list[str], loader: Any) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    except Exception as err:
        raise ConfigError(*describe(err).split(": ", 1)) from None


def sweep_jobs(config_name: str, overrides: list[str], loader: Any) -> list[list[str]]:
    """Every job's overrides, expanded as Hydra's basic sweeper does: the config's
    ``hydra.sweeper.params`` first, then the command line; the product of every sweep."""
    parsed = _parse(overrides, loader)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose_job(config_name, fixed).hydra.sweeper.get("params") or {}
    everything = _parse([f"{k}={v}" for k, v in params.items()] + overrides, loader)
    choices: dict[str, list[str]] = {}
    for override in everything:
        key = override.get_key_element()
        if override.is_interval_sweep():
            raise ConfigError(
                key.lstrip("+~"),
                f"{override.get_value_string()}: an interval needs a sampling sweeper "
                "(hydra/sweeper=optuna); the basic and SLURM sweeps take choice, range, glob or a list",
            )
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception as err:
                raise ConfigError(key.lstrip("+~"), first_line(err)) from None
            choices[key] = [f"{key}={value}" for value in values]
        else:
            choices[key] = [override.input_line]
    return [list(job) for job in itertools.product(*choices.values())]


def check_jobs(
    config_name: str, argv: list[str], build: Callable[[Any], Any] | None
) -> list[tuple[list[str], Any]]:
    """Compose and build every job of a command line; returns (overrides, built) per job.

    Raises ConfigError naming the field (and, in a sweep, the point) on the first bad job.
    """
    line = split_command_line(argv)
    line.overrides = search_path_override(line.config_dir) + line.overrides
    jobs: list[tuple[list[str], Any]] = []
    with hydra_context(config_name) as loader:
        if line.multirun:
            points = sweep_jobs(config_name, line.overrides, loader)
        else:
            parsed = _parse(line.overrides, loader)
            sweeps = [o for o in parsed if o.is_sweep_override()]
            if sweeps:
                raise ConfigError(
                    sweeps[0].get_key_element().lstrip("+~"),
                    f"'{sweeps[0].get_value_string()}' is a sweep: add -m (--multirun)",
                )
            points = [line.overrides]
        shared = set.intersection(*(set(p) for p in points)) if points else set()
        for num, point in enumerate(points):
            cfg = compose_job(config_name, point, num)
            try:
                jobs.append((point, build(cfg) if build else cfg))
            except ConfigError as err:
                if len(points) > 1:
                    where = " ".join(o for o in point if o not in shared)
                    raise ConfigError(err.field, f"{err.message} (sweep point {where})") from None
                raise
    return jobs


def check_command_line(config_name: str, argv: list[str], build: Callable[[Any], Any] | None) -> None:
    """`check_jobs`, ending the process with a one-line error on bad input."""
    if not split_command_line(argv).checked:
        return
    try:
        check_jobs(config_name, argv, build)
    except ConfigError as err:
        fail(str(err))


def hydra_main(
    config_name: str, build: Callable[[Any], Any]
) -> Callable[[Callable[[Any, Any], object]], Callable[[], object]]:
    """Decorator for an entry point: ``@hydra_main("train", build_run) def main(cfg, run): ...``.

    ``build(cfg)`` turns the composed config into the typed configs the task receives; it runs
    for every job of the command line before Hydra starts any, and again inside each job. The
    entry keeps ``config_name`` and ``build``, so its checks can also run in process
    (``check_command_line(main.config_name, argv, main.build)``).
    """
    import hydra

    def decorate(task: Callable[[Any, Any], object]) -> Callable[[], object]:
        @functools.wraps(task)
        def guarded(cfg):
            from hydra.core.hydra_config import HydraConfig

            job = HydraConfig.get()
            try:
                check_root(config_name, cfg, list(job.overrides.task), job.runtime.choices.get("sweep"))
                return task(cfg, build(cfg))
            except ConfigError as err:
                fail(str(err))

        hydra_entry = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base=None)(
            guarded
        )

        @functools.wraps(task)
        def entry():
            # the `deepspeed` launcher appends --local_rank=N; the rank is also in LOCAL_RANK
            sys.argv = [a for a in sys.argv if not a.startswith("--local_rank")]
            register_schemas()
            check_command_line(config_name, sys.argv[1:], build)
            return hydra_entry()

        entry.config_name, entry.build = config_name, build
        return entry

    return decorate
