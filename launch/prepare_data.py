"""Pre-build the packed training data of a run on CPU, before (or away from) the GPUs.

    python launch/prepare_data.py                                # the embedded default (tiny model)
    python launch/prepare_data.py +experiment=llama7b_8k_ours    # PG19: 1000 x 64 sequences of 8192 tokens

It composes the training config (`configs/train.yaml`), builds the run as `launch/train.py` does
and asks for exactly what training will ask for: ``trainer.steps x trainer.global_batch_size``
sequences of ``data.max_length`` tokens (at most s x L), rounded up to whole shuffle blocks
(`dprope.data.sampler`). The run then finds the cache and tokenizes nothing.
"""

from __future__ import annotations

import logging

from dprope.cli import hydra_main
from dprope.data import build_train_dataset, load_tokenizer
from dprope.data.sampler import covering_size
from dprope.train.config import RunConfig


@hydra_main("train", RunConfig.from_config)
def main(cfg, run: RunConfig) -> None:
    logging.getLogger("dprope").setLevel(logging.INFO)
    if run.data.streaming:
        print("data.streaming=true: sequences are packed on the fly, nothing to prepare")
        return
    tokenizer = load_tokenizer(run.model.tokenizer_name)
    num_sequences = covering_size(run.trainer.steps * run.trainer.global_batch_size)
    dataset = build_train_dataset(
        run.data,
        tokenizer,
        run.model.tokenizer_name,
        num_sequences,
        run.model.scaling(run.rope).target_length,
    )
    action = "reused" if dataset.from_cache else "built"
    print(
        f"{action} {dataset.path}: {len(dataset)} sequences of {run.data.max_length} tokens "
        f"({dataset.num_packed} distinct, {dataset.meta['num_documents']} documents)"
    )


if __name__ == "__main__":
    main()
