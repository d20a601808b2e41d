"""Patches of one model instance, never of a library module.

transformers' modelling code looks some names up in its module's globals at call time: the
attention forward of a Llama-family layer calls ``apply_rotary_pos_emb`` and reads
``ALL_ATTENTION_FUNCTIONS``. Assigning such a name in the modelling module would change every
model of the process, the ones built later included. `override_globals` instead gives one module
instance its own copy of its class's forward, whose globals are the modelling module's with some
names replaced: the class, the modelling module and every other instance stay as they were.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from typing import Any

import torch

# the names an instance's forward copy replaces, kept on the instance so later calls add to them
OVERRIDES = "_dprope_global_overrides"


def override_globals(module: torch.nn.Module, names: Mapping[str, Any]) -> bool:
    """Bind ``module.forward`` to a copy of its class's forward that sees ``names`` in place of
    those globals of its modelling module; a later call on the same instance adds to the names of
    the earlier ones. Returns False, and changes nothing, when the class's forward reads none of
    ``names`` (a decorated forward reads them in its inner function only: it is not copied)."""
    function = type(module).forward
    code = getattr(function, "__code__", None)  # None: not a Python function (a builtin, a partial)
    if code is None or not set(names) & set(code.co_names):
        return False
    if "forward" in vars(module) and OVERRIDES not in vars(module):
        raise ValueError(f"{type(module).__name__} already has an instance forward of another origin")
    overrides = {**vars(module).get(OVERRIDES, {}), **names}
    module.forward = types.MethodType(with_globals(function, overrides), module)
    vars(module)[OVERRIDES] = overrides
    return True


def with_globals(function: types.FunctionType, names: Mapping[str, Any]) -> types.FunctionType:
    """A copy of ``function`` that sees ``names`` in place of those globals of its module."""
    namespace = {**function.__globals__, **names}
    code = function.__code__
    copy = types.FunctionType(code, namespace, function.__name__, function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    functools.update_wrapper(copy, function)
    return copy


def global_overrides(module: torch.nn.Module) -> dict[str, Any]:
    """The globals `override_globals` replaced for this instance (empty: its class's forward)."""
    return dict(vars(module).get(OVERRIDES, {}))
