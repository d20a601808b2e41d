"""Native transformers `rope_parameters` for every strategy (docs/method-notes.md, section 5).

An exported model needs no custom code and no ``trust_remote_code``: each strategy maps onto a
rope type that transformers 5.x implements. A per-pair divisor vector (DPRoPE) is exactly the
``longrope`` type with ``short_factor = long_factor = lambda`` and ``attention_factor = 1``.
``inv_freq`` is a non-persistent buffer, so patching it in memory would not survive
``save_pretrained``: export always goes through the config.
"""

from __future__ import annotations

from typing import Any

from dprope.rope.strategies import RopeScaling


def export_default(scaling: RopeScaling, **_: Any) -> dict[str, Any]:
    """``none``: the original frequencies."""
    return {"rope_type": "default", "rope_theta": scaling.rope_theta}


def export_linear(scaling: RopeScaling, **_: Any) -> dict[str, Any]:
    """``pi``: transformers' ``linear`` type."""
    return {"rope_type": "linear", "rope_theta": scaling.rope_theta, "factor": scaling.factor}


def export_ntk(scaling: RopeScaling, **_: Any) -> dict[str, Any]:
    """``ntk``: the ``default`` type with the raised base."""
    return {"rope_type": "default", "rope_theta": scaling.details["ntk_rope_theta"]}


def export_yarn(
    scaling: RopeScaling,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    truncate: bool = True,
    **_: Any,
) -> dict[str, Any]:
    """``yarn``: transformers' ``yarn`` type with our ramp parameters."""
    params: dict[str, Any] = {
        "rope_type": "yarn",
        "rope_theta": scaling.rope_theta,
        "factor": scaling.factor,
        "original_max_position_embeddings": scaling.original_length,
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
    }
    if attention_factor is not None:
        params["attention_factor"] = attention_factor
    if not truncate:
        params["truncate"] = False
    return params


def export_llama3(
    scaling: RopeScaling, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0, **_: Any
) -> dict[str, Any]:
    """``llama3``: transformers' ``llama3`` type."""
    return {
        "rope_type": "llama3",
        "rope_theta": scaling.rope_theta,
        "factor": scaling.factor,
        "original_max_position_embeddings": scaling.original_length,
        "low_freq_factor": low_freq_factor,
        "high_freq_factor": high_freq_factor,
    }


def export_longrope(scaling: RopeScaling, **_: Any) -> dict[str, Any]:
    """A per-pair divisor vector (``dprope``) as transformers' ``longrope`` type.

    ``short_mscale``/``long_mscale`` = 1 stop vLLM from applying its own default scale;
    transformers logs them as unrecognized keys and ignores them.
    """
    factors = [float(x) for x in scaling.scaling_factors.tolist()]
    return {
        "rope_type": "longrope",
        "rope_theta": scaling.rope_theta,
        "factor": scaling.factor,
        "original_max_position_embeddings": scaling.original_length,
        "short_factor": factors,
        "long_factor": list(factors),
        "attention_factor": 1.0,
        "short_mscale": 1.0,
        "long_mscale": 1.0,
    }
