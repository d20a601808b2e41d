"""The reproduction composed from its Hydra config, shrunk to a seconds-long miniature."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dprope.cli import CONFIG_DIR


def miniature(output_dir, data_cache, *extra: str) -> list[str]:
    """Overrides for a miniature of the whole pipeline: 2-layer model, L=48 -> 96 (the shortest L a
    passkey document fits), a few steps, 20 documents per split."""
    return [
        "model.hidden_size=32",
        "model.num_hidden_layers=2",
        "model.head_dim=16",
        "model.num_attention_heads=2",
        "model.num_key_value_heads=2",
        "model.intermediate_size=64",
        "model.original_max_position_embeddings=48",
        f"reproduce.output_dir={output_dir}",
        f"data.cache_dir={data_cache}",
        "data.num_proc=1",
        "data.max_documents=20",
        "reproduce.factor=2",
        "reproduce.pretrain.steps=4",
        "reproduce.pretrain.global_batch_size=4",
        "reproduce.pretrain.micro_batch_size=4",
        "reproduce.pretrain.warmup_steps=0",
        "reproduce.finetune.tokens=384",
        "reproduce.finetune.global_batch_size=2",
        "reproduce.finetune.micro_batch_size=2",
        "reproduce.measure.documents=2",
        "reproduce.measure.retrieval.trials=2",
        "reproduce.precision.shift=256",
        "trainer.save_every=0",
        *extra,
    ]


def compose_plain(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("reproduction", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("reproduce-data")
