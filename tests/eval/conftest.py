"""Fixtures of the evaluation tests: a saved tiny model and data files written here.

The tiny model is the `model=tiny` preset with a context of 1024 positions instead of 256: the
passkey template alone is 248 byte-tokens, so 256 would leave no room for filler.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dprope.eval.benchmarks.longbench_e.tasks import TASKS as LONGBENCH_TASKS

TINY_MAX_POSITIONS = 1024


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init tiny Llama (seed 0) and the byte tokenizer, saved like a trainer export."""
    import torch
    from transformers import LlamaForCausalLM

    from dprope.data.tokenizer import byte_tokenizer
    from dprope.model import ModelConfig

    path = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    config = ModelConfig(name="tiny", tokenizer="byte", original_max_position_embeddings=TINY_MAX_POSITIONS)
    LlamaForCausalLM(config.hf_config()).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tiny_eval_model(tiny_model_dir):
    """The `ModelConfig` an eval run gets from `model=tiny model.pretrained=<dir>`."""
    from dprope.model import ModelConfig

    return ModelConfig(name="tiny", pretrained=str(tiny_model_dir), tokenizer="byte")


def _longbench_record(dataset: str, i: int, length: int) -> dict:
    context = f"Passage {i}: the river Alder flows north past the town of Brill. " * 3
    answers, classes = ["Brill"], None
    if dataset == "trec_e":
        answers, classes = ["Location"], ["Location", "Human", "Entity", "Description"]
    elif dataset == "passage_count_e":
        answers = ["3"]
    elif dataset == "passage_retrieval_en_e":
        answers = ["Paragraph 2"]
    elif dataset in ("lcc_e", "repobench-p_e"):
        context, answers = "def add(a, b):\n    return a + b\n\n", ["print(add(1, 2))"]
    return {
        "input": f"Where does the river flow ({i})?",
        "context": context,
        "answers": answers,
        "length": length,
        "all_classes": classes,
        "_id": f"{dataset}-{i}",
    }


@pytest.fixture(scope="session")
def longbench_dir(tmp_path_factory) -> Path:
    """Three samples per LongBench-E dataset, one in each length bucket (LongBench's jsonl format)."""
    path = tmp_path_factory.mktemp("longbench")
    for dataset in LONGBENCH_TASKS:
        lines = [json.dumps(_longbench_record(dataset, i, n)) for i, n in enumerate((1200, 5200, 9100))]
        (path / f"{dataset}.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def text_documents(tmp_path_factory) -> list[Path]:
    """Two long and one short plain-text documents."""
    path = tmp_path_factory.mktemp("documents")
    files = []
    for i, words in enumerate((300, 400, 10)):
        file = path / f"doc{i}.txt"
        file.write_text(" ".join(f"word{(k * 7 + i) % 53}" for k in range(words)))
        files.append(file)
    return files
