"""Strategy configs own their checks, their defaults and their export; DPRoPE's candidates are
the registered strategies; the rotary geometry is checked in one place."""

from __future__ import annotations

import dataclasses
import inspect
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from dprope.cli import check_jobs
from dprope.config import ConfigError
from dprope.model import ModelConfig
from dprope.rope import selection, strategies
from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.config import Llama3Config, NTKConfig, RopeConfig, YarnConfig
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.registry import STRATEGIES, compute_scaling, default_config, rope_config
from dprope.rope.report import AnalysisConfig, AnalysisJob, format_table, run_analysis
from dprope.rope.selection import DPRoPEConfig

ROOT = Path(__file__).resolve().parents[2]
LLAMA2 = RotaryGeometry(128, 10000.0, 4096)


def from_command_line(*overrides: str):
    """The typed configs of launch/analyze.py's command line (its build, `AnalysisJob.from_config`)."""
    ((_, job),) = check_jobs("analyze", list(overrides), AnalysisJob.from_config)
    return job.model, job.rope


# ---- one validation site per rule ----

# strategy, field, bad value, its command-line spelling, the class whose validate owns the rule,
# and whether the rule is also the analysis's own (B and the angle dtype are checked by the one
# rule function wherever they are set, the DisturbanceAnalyzer included)
BAD_VALUES = [
    ("pi", "factor", 0.5, "0.5", RopeConfig, False),
    ("yarn", "factor", float("inf"), "inf", RopeConfig, False),
    ("pi", "name", "yarn", "yarn", RopeConfig, False),
    ("yarn", "beta_fast", 0.5, "0.5", YarnConfig, False),
    ("yarn", "beta_slow", 0.0, "0", YarnConfig, False),
    ("yarn", "attention_factor", -1.0, "-1", YarnConfig, False),
    ("llama3", "low_freq_factor", 0.0, "0", Llama3Config, False),
    ("llama3", "high_freq_factor", 0.5, "0.5", Llama3Config, False),
    ("dprope", "num_interpolated_dims", 7, "7", DPRoPEConfig, False),
    ("dprope", "num_interpolated_dims", -2, "-2", DPRoPEConfig, False),
    ("dprope", "candidates", ["pi", "yarn"], "[pi,yarn]", DPRoPEConfig, False),
    ("dprope", "candidates", ["none", "clex"], "[none,clex]", DPRoPEConfig, False),
    ("dprope", "candidates", ["none", "dprope"], "[none,dprope]", DPRoPEConfig, False),
    ("dprope", "candidates", ["none", "pi", "pi"], "[none,pi,pi]", DPRoPEConfig, False),
    ("dprope", "num_intervals", 0, "0", DPRoPEConfig, True),
    ("dprope", "angle_dtype", "half", "half", DPRoPEConfig, True),
]
IDS = [f"{name}.{field}={text}" for name, field, _, text, _, _ in BAD_VALUES]


def bypass(monkeypatch, owner: type[RopeConfig]) -> None:
    """Switch off the rules ``owner.validate`` adds (its parent's still run)."""
    parent = owner.__mro__[1]
    replacement = parent.validate if parent is not object else None
    if owner is RopeConfig:
        monkeypatch.setattr(RopeConfig, "validate", lambda self, geometry=None: None)
    else:
        monkeypatch.setattr(owner, "validate", replacement)


@pytest.mark.parametrize("name,field,value,text,owner,_", BAD_VALUES, ids=IDS)
def test_a_bad_value_is_refused_by_its_strategys_validate_naming_the_field(
    name, field, value, text, owner, _
):
    with pytest.raises(ConfigError) as direct:
        STRATEGIES[name](**{field: value})
    assert direct.value.field == field
    raising = [frame.f_code.co_qualname for frame, _ in traceback.walk_tb(direct.value.__traceback__)]
    assert f"{owner.__name__}.validate" in raising, raising

    with pytest.raises(ConfigError) as hydra:
        from_command_line("model=llama2_7b", f"rope={name}", f"rope.{field}={text}")
    assert hydra.value.field == f"rope.{field}"
    assert hydra.value.message == direct.value.message


@pytest.mark.parametrize("name,field,value,text,owner,analysis_rule", BAD_VALUES, ids=IDS)
def test_no_second_site_refuses_a_bad_value(monkeypatch, name, field, value, text, owner, analysis_rule):
    """With the owning validate switched off, nothing else on the way (dataclass, Hydra, the
    strategy's function) refuses the value: the rule lives in one place."""
    bypass(monkeypatch, owner)
    cfg = STRATEGIES[name](**{field: value})
    _, typed = from_command_line("model=llama2_7b", f"rope={name}", f"rope.{field}={text}")
    assert getattr(typed, field) == getattr(cfg, field)
    if analysis_rule:
        return  # the DisturbanceAnalyzer applies the same rule function when it is built
    try:
        cfg.compute(LLAMA2)
    except ConfigError as err:
        pytest.fail(f"a second site refused {field}: {err}")
    except Exception:  # an unchecked value may break the arithmetic; no ConfigError is the point
        pass


def test_rules_that_need_the_model_are_checked_against_its_geometry():
    k130 = DPRoPEConfig(factor=2.0, num_interpolated_dims=130)  # fine alone, too large for d = 128
    with pytest.raises(ConfigError) as err:
        compute_scaling(k130, LLAMA2)
    assert err.value.field == "rope.num_interpolated_dims"
    tiny_head = RotaryGeometry(2, 10000.0, 256)
    for cfg in (NTKConfig(factor=2.0), DPRoPEConfig(factor=2.0, candidates=["none", "ntk"])):
        with pytest.raises(ConfigError) as err:
            compute_scaling(cfg, tiny_head)
        assert err.value.field == "model.head_dim"


# ---- the geometry ----


@pytest.mark.parametrize(
    "override,field",
    [
        ("model.head_dim=127", "model.head_dim"),
        ("model.rope_theta=1", "model.rope_theta"),
        ("model.rope_theta=inf", "model.rope_theta"),
        ("model.original_max_position_embeddings=0", "model.original_max_position_embeddings"),
    ],
)
def test_geometry_errors_name_the_model_field_from_every_path(override, field):
    with pytest.raises(ConfigError) as preset:
        from_command_line(override, "rope=pi")
    key, value = override.split("=")
    numbers = {"head_dim": 128, "rope_theta": 10000.0, "original_length": 4096}
    numbers[{"model.original_max_position_embeddings": "original_length"}.get(key, key[6:])] = (
        float(value) if key == "model.rope_theta" else int(value)
    )
    with pytest.raises(ConfigError) as strategy:
        strategies.yarn(
            **numbers, factor=2.0, beta_fast=32.0, beta_slow=1.0, attention_factor=None, truncate=True
        )
    assert preset.value.field == strategy.value.field == field
    assert preset.value.message == strategy.value.message


def test_the_geometry_is_checked_in_one_place(monkeypatch):
    """With RotaryGeometry's check switched off, neither the model preset nor a strategy refuses
    an odd head_dim: no second copy of the check exists."""
    monkeypatch.setattr(RotaryGeometry, "__post_init__", lambda self: None)
    model = ModelConfig(tokenizer="byte", head_dim=15, original_max_position_embeddings=0)
    assert model.geometry.head_dim == 15
    try:
        strategies.pi(15, 10000.0, 0, 2.0)
    except ConfigError as err:
        pytest.fail(f"a second geometry check: {err}")
    except Exception:  # arithmetic on an unchecked geometry may fail; no ConfigError is the point
        pass


def test_reference_frequencies_come_from_the_geometry(monkeypatch):
    """Divisors and the pre-training distribution are measured against the geometry's own
    frequencies: a model whose pre-training RoPE differs only has to change them there."""
    plain = RotaryGeometry.inv_freq

    def model_own(self, dtype=torch.float32):
        return plain(self, dtype) / 3

    monkeypatch.setattr(RotaryGeometry, "inv_freq", model_own)
    reference = plain(LLAMA2) / 3
    assert torch.equal(default_config("none", 2.0).compute(LLAMA2).inv_freq, reference)
    assert torch.equal(default_config("pi", 2.0).compute(LLAMA2).inv_freq, reference / 2)
    assert torch.equal(DisturbanceAnalyzer(LLAMA2).original_inv_freq, reference)
    ntk = default_config("ntk", 2.0).compute(LLAMA2)  # its own base, divisors against the reference
    assert torch.allclose(ntk.scaling_factors, reference.double() / ntk.inv_freq.double())


# ---- defaults written once, exports that carry every parameter ----


def test_strategy_functions_take_no_defaults():
    """A strategy's defaults are its config fields' defaults and nothing else."""
    functions = [
        strategies.none,
        strategies.pi,
        strategies.ntk,
        strategies.yarn,
        strategies.llama3,
        selection.dprope,
    ]
    for function in functions:
        defaults = [
            p.name for p in inspect.signature(function).parameters.values() if p.default is not p.empty
        ]
        assert not defaults, f"{function.__name__} has defaults for {defaults}"


# every parameter of every strategy, away from its default
NON_DEFAULT: dict[str, dict[str, Any]] = {
    "none": {},
    "pi": {},
    "ntk": {},
    "yarn": {"beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.3, "truncate": False},
    "llama3": {"low_freq_factor": 2.0, "high_freq_factor": 8.0},
    "dprope": {
        "num_intervals": 90,
        "threshold": 0.01,
        "num_interpolated_dims": 40,
        "candidates": ["none", "pi", "yarn"],
        "angle_dtype": "float64",
    },
}


def test_every_parameter_is_covered_below():
    assert set(NON_DEFAULT) == set(STRATEGIES)
    for name, cls in STRATEGIES.items():
        own = {f.name for f in dataclasses.fields(cls)} - {"name", "factor"}
        assert set(NON_DEFAULT[name]) == own, name
        defaults = cls()
        assert all(getattr(defaults, k) != v for k, v in NON_DEFAULT[name].items()), name


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_export_carries_every_parameter_to_transformers(name):
    """transformers, given only the exported rope_parameters, computes the config's frequencies."""
    cfg = STRATEGIES[name](factor=4.0, **NON_DEFAULT[name])
    scaling = cfg.compute(LLAMA2)
    params = cfg.export(scaling)
    hf = LlamaConfig(
        hidden_size=128 * 4,
        num_attention_heads=4,
        head_dim=128,
        max_position_embeddings=scaling.target_length,
        rope_parameters=params,
    )
    rotary = LlamaRotaryEmbedding(config=hf)
    assert torch.equal(rotary.inv_freq, scaling.inv_freq)
    assert rotary.attention_scaling == pytest.approx(scaling.attention_factor, rel=1e-12)


# ---- DPRoPE's candidates are the registered strategies ----

CANDIDATES = [name for name in STRATEGIES if name not in ("none", "dprope")]


@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_every_registered_strategy_is_a_candidate_with_its_own_divisors(candidate, factor):
    cfg = DPRoPEConfig(factor=factor, candidates=["none", candidate])
    result = cfg.compute(LLAMA2)
    own = default_config(candidate, factor).compute(LLAMA2).scaling_factors
    choices = result.details["choices"]
    picked = torch.tensor([c == candidate for c in choices])
    assert picked.any() and not picked.all(), f"{candidate} at s={factor} must win some pairs, not all"
    assert torch.equal(result.scaling_factors[picked], own[picked])
    assert torch.equal(result.scaling_factors[~picked], torch.ones(int((~picked).sum()), dtype=torch.float64))


def test_dprope_cannot_be_its_own_candidate():
    with pytest.raises(ConfigError, match="its own candidate"):
        DPRoPEConfig(candidates=["none", "dprope"])


@dataclass
class HalfwayConfig(RopeConfig):
    """A strategy registered by a test alone: every pair divided by sqrt(s)."""

    name: str = "halfway"  # fixed (registered as 'halfway')

    rule: ClassVar[str] = "lambda_i = sqrt(s)"

    def _compute(self, geometry: RotaryGeometry):
        divisors = torch.full((geometry.num_pairs,), self.factor**0.5, dtype=torch.float64)
        inv_freq = geometry.inv_freq() / self.factor**0.5
        return strategies.scaling_result(self.name, geometry, self.factor, inv_freq, scaling_factors=divisors)

    def export(self, scaling):
        return {"rope_type": "linear", "rope_theta": scaling.rope_theta, "factor": scaling.factor}


def test_a_newly_registered_strategy_is_a_candidate_and_a_table_row(monkeypatch):
    """One registry line makes a strategy a DPRoPE candidate and a row of the disturbance table."""
    monkeypatch.setitem(STRATEGIES, "halfway", HalfwayConfig)
    rope = rope_config({"name": "dprope", "factor": 4.0, "candidates": ["none", "halfway"]})
    result = rope.compute(LLAMA2)
    assert set(result.details["choices"]) == {"none", "halfway"}
    assert set(result.scaling_factors.tolist()) == {1.0, 2.0}  # sqrt(4) exactly, where chosen
    llama2 = ModelConfig(name="llama2", pretrained="x", head_dim=128, original_max_position_embeddings=4096)
    table = format_table(run_analysis(llama2, rope, AnalysisConfig(num_intervals=90, figures=False)))
    assert "lambda_i = sqrt(s)" in table
