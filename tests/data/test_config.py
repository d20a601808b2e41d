"""The data presets and the typed config: every key declared, documented and validated."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from dprope.cli import compose_config, group_options
from dprope.config import ConfigError
from dprope.data import EMBEDDED, DataConfig, data_config

PRESETS = group_options("data")


def preset(name: str) -> dict:
    """The preset as Hydra composes it on its schema: every field, the preset's values first."""
    return OmegaConf.to_container(compose_config("evaluate", [f"data={name}"]).data)


def test_presets_exist():
    assert {"pg19", "local", "embedded"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_every_field(name):
    assert set(preset(name)) == {f.name for f in dataclasses.fields(DataConfig)}


@pytest.mark.parametrize("name", ["pg19", "embedded"])
def test_preset_converts(name):
    cfg = data_config(preset(name))
    assert cfg.name == name


def test_local_preset_needs_paths():
    with pytest.raises(ConfigError, match=r"^data\.paths: "):
        data_config(preset("local"))
    cfg = data_config({**preset("local"), "paths": {"train": "/data/*.txt"}})
    assert cfg.paths["train"] == ["/data/*.txt"]


def test_embedded_constant_is_the_embedded_preset():
    assert data_config(preset("embedded")) == EMBEDDED


def test_pg19_defaults():
    cfg = data_config(preset("pg19"))
    assert (cfg.source, cfg.hub_id, cfg.text_field, cfg.max_length) == ("hub", "emozilla/pg19", "text", 8192)


@pytest.mark.parametrize(
    "override, field",
    [
        ({"source": "web"}, "data.source"),
        ({"max_length": 0}, "data.max_length"),
        ({"max_length": -8}, "data.max_length"),
        ({"max_length": "long"}, "data.max_length"),
        ({"source": "hub"}, "data.hub_id"),
        ({"text_field": ""}, "data.text_field"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"num_proc": 0}, "data.num_proc"),
        ({"eval_splits": ["train"]}, "data.eval_splits"),
        ({"paths": {"train": 3}}, "data.paths"),
        ({"max_lenght": 8}, "data.max_lenght"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        data_config({**preset("embedded"), **override})
    assert err.value.field == field and "\n" not in str(err.value)


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DPROPE_DATA_CACHE", str(tmp_path))
    assert EMBEDDED.cache_root == tmp_path
    assert dataclasses.replace(EMBEDDED, cache_dir=str(tmp_path / "x")).cache_root == tmp_path / "x"
    monkeypatch.delenv("DPROPE_DATA_CACHE")
    assert str(EMBEDDED.cache_root).endswith(".cache/dprope/data")
