"""Typed configuration at the boundary.

Entry points in `launch/` turn the composed Hydra config into the dataclasses declared next to
the code that uses them (`RopeConfig`, `ModelConfig`, ...) with `from_mapping`. Code inside
`dprope/` only ever sees those dataclasses, never a `DictConfig`. Every validation failure is a
`ConfigError` whose message starts with the dotted name of the offending field, so the entry
point can print it on one line and exit before any expensive work.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration value. `str(err)` is one line: ``<field>: <what is wrong>``."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")

    def under(self, prefix: str) -> ConfigError:
        """The same error with its field name qualified by a parent key (``rope`` + ``factor``)."""
        return ConfigError(f"{prefix}.{self.field}" if prefix else self.field, str(self).split(": ", 1)[1])


def _coerce(value: Any, annotation: Any, field: str) -> Any:
    """Convert a plain YAML value to the annotated type, or raise a ConfigError naming `field`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(field, "must be set (got null)")
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for arg in non_none:
            try:
                return _coerce(value, arg, field)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return from_mapping(annotation, value, prefix=field)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(field, f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a plain mapping (for example `OmegaConf.to_container(cfg.rope)`).

    Unknown keys are an error (a typo must not be silently ignored); missing keys take the
    dataclass default. Errors raised by `__post_init__` are re-qualified with `prefix`.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(name, f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        qualified = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], qualified)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not err.field.startswith(prefix + "."):
            raise err.under(prefix) from None
        raise


def local_path(name: str) -> Path | None:
    """The local path ``name`` names, or None when it reads as a hub id.

    A name that starts with ``.``, ``/`` or ``~``, or that exists on disk, is local: a missing
    local directory must be reported as such, never sent to the hub.
    """
    path = Path(name).expanduser()
    return path if name.startswith((".", "/", "~")) or path.exists() else None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
