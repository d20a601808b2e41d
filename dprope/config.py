"""Typed configuration at the boundary.

Each config dataclass (`ModelConfig`, `RopeConfig` and its per-strategy subclasses, `DataConfig`,
`TrainerConfig`, `LoggerConfig`, `EvalConfig`, `AnalysisConfig`) is the single source of its
fields, types and defaults: `dprope.cli` registers it as the schema of its Hydra group and the
YAML presets only override values. OmegaConf does the types; each dataclass's `__post_init__`
does ranges and cross-field checks. Code inside `dprope/` only ever sees the dataclasses, never a
`DictConfig`.

Coercion is OmegaConf's: a string that spells a value of the field's type is taken (``'4'`` for
an int, ``'1e-5'`` for a float, ``yes``/``no``/``on``/``off``/``1``/``0`` for a bool), a number
where a string belongs becomes that string, and anything else (``'abc'`` or ``3.5`` for an int, a
scalar for a list) is an error. Every failure is a `ConfigError` whose message starts with the
dotted name of the offending field, so an entry point prints it on one line and exits 2 before
any expensive work.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration value. `str(err)` is one line: ``<field>: <what is wrong>``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def under(self, prefix: str) -> ConfigError:
        """The same error with its field name qualified by a parent key (``rope`` + ``factor``)."""
        if not prefix or self.field == prefix or self.field.startswith(prefix + "."):
            return self
        return ConfigError(f"{prefix}.{self.field}", self.message)


def check_choice(obj: Any, field: str, choices: Any) -> None:
    """A `ConfigError` on ``field`` unless ``obj.<field>`` is one of ``choices``."""
    value = getattr(obj, field)
    if value not in choices:
        raise ConfigError(field, f"must be one of {', '.join(choices)} (got {value!r})")


def first_line(err: BaseException, with_type: bool = False) -> str:
    """The first line of an exception's message, for a one-line error (``with_type``: prefixed
    with the exception's class, where the message alone would not say what failed)."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0]}" if with_type else text.splitlines()[0]


def omegaconf_error(err: Exception, prefix: str = "") -> ConfigError:
    """An OmegaConf validation error as a `ConfigError` naming the full key."""
    key = getattr(err, "full_key", None) or ""
    message = getattr(err, "msg", None) or first_line(err)
    message = first_line(ValueError(message))
    if "not in struct" in message or "Missing key" in message:
        message = "unknown key"
    field = f"{prefix}.{key}" if prefix and key else (key or prefix or "config")
    return ConfigError(field, message)


def _check_node(node: Any, path: str) -> None:
    """Refuse keys a schema does not declare (Hydra's ``+key=value`` force-adds them, and
    OmegaConf's `to_object` would silently drop them), and build every nested dataclass first, so
    that its `__post_init__` error names its own path (``reproduce.finetune.tokens``)."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        where = f"{path}.{key}" if path else str(key)
        if declared is not None and key not in declared:
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(declared))})")
        if not OmegaConf.is_interpolation(node, key) and not OmegaConf.is_missing(node, key):
            child = node[key]
            _check_node(child, where)
            if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
                try:
                    OmegaConf.to_object(child)
                except ConfigError as err:
                    raise err.under(where) from None


def to_typed(node: Any, prefix: str = "") -> Any:
    """The dataclass instance a schema-typed OmegaConf node describes (interpolations resolved,
    `__post_init__` run); errors name ``<prefix>.<field>``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _check_node(node, prefix)
    try:
        return OmegaConf.to_object(node)
    except ConfigError as err:
        raise err.under(prefix) from None
    except OmegaConfBaseException as err:
        inside = (getattr(err, "full_key", None) or "").startswith(prefix)
        raise omegaconf_error(err, "" if inside else prefix) from None


def typed_sections(cls: type[T], cfg: Any) -> T:
    """Root dataclass `cls` (an entry point's typed job) from a composed config whose sections,
    one per field of `cls` and of the same name, are schema-typed nodes; errors name the field."""
    import dataclasses

    return cls(**{f.name: to_typed(cfg[f.name], f.name) for f in dataclasses.fields(cls)})


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a plain mapping through its OmegaConf schema.

    Unknown keys are an error (a typo must not be silently ignored); missing keys take the
    dataclass default; errors, `__post_init__`'s included, name ``<prefix>.<field>``.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.merge(OmegaConf.structured(cls), dict(data or {}))
    except OmegaConfBaseException as err:
        raise omegaconf_error(err, prefix) from None
    return to_typed(node, prefix)


def local_path(name: str) -> Path | None:
    """The local path ``name`` names, or None when it reads as a hub id.

    A name that starts with ``.``, ``/`` or ``~``, or that exists on disk, is local: a missing
    local directory must be reported as such, never sent to the hub.
    """
    path = Path(name).expanduser()
    return path if name.startswith((".", "/", "~")) or path.exists() else None
