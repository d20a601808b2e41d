"""Pre-build the packed training data of a run on CPU, before (or away from) the GPUs.

    python launch/prepare_data.py                                # the embedded default (tiny model)
    python launch/prepare_data.py +experiment=llama7b_8k_ours    # PG19: 1000 x 64 sequences of 8192 tokens

It composes the training config (`configs/train.yaml`) and asks for exactly what `launch/train.py`
will ask for: ``trainer.steps x trainer.global_batch_size`` sequences of ``data.max_length``
tokens, at most s x L. The run then finds the cache and tokenizes nothing.
"""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from dprope.cli import hydra_main
from dprope.config import from_mapping
from dprope.data import build_train_dataset, data_config, load_tokenizer
from dprope.model import ModelConfig
from dprope.rope.registry import rope_config
from dprope.train.config import TrainerConfig


@hydra_main("train")
def main(cfg) -> None:
    logging.getLogger("dprope").setLevel(logging.INFO)
    plain = OmegaConf.to_container(cfg, resolve=True)
    model = from_mapping(ModelConfig, plain["model"], prefix="model")
    rope = rope_config(plain["rope"])
    data = data_config(plain["data"])
    trainer = from_mapping(TrainerConfig, plain["trainer"], prefix="trainer")
    if data.streaming:
        print("data.streaming=true: sequences are packed on the fly, nothing to prepare")
        return
    tokenizer = load_tokenizer(model.tokenizer_name)
    num_sequences = trainer.steps * trainer.global_batch_size
    dataset = build_train_dataset(
        data, tokenizer, model.tokenizer_name, num_sequences, model.scaling(rope).target_length
    )
    action = "reused" if dataset.from_cache else "built"
    print(
        f"{action} {dataset.path}: {len(dataset)} sequences of {data.max_length} tokens "
        f"({dataset.num_packed} distinct, {dataset.meta['num_documents']} documents)"
    )


if __name__ == "__main__":
    main()
