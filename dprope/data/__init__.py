"""Training and evaluation data: load (PG19, local files, the embedded corpus), tokenize, pack,
cache, and sample resumably across ranks. See `dprope.data.build` for the order of work."""

from dprope.data.build import build_train_dataset
from dprope.data.config import EMBEDDED, DataConfig, data_config
from dprope.data.dataset import PackedDataset, PackedStream
from dprope.data.evaluation import eval_documents
from dprope.data.sampler import ResumableSampler, collate_packed, cumulative_lengths
from dprope.data.tokenizer import byte_tokenizer, load_tokenizer, tokenizer_fingerprint

__all__ = [
    "EMBEDDED",
    "DataConfig",
    "PackedDataset",
    "PackedStream",
    "ResumableSampler",
    "build_train_dataset",
    "byte_tokenizer",
    "collate_packed",
    "cumulative_lengths",
    "data_config",
    "eval_documents",
    "load_tokenizer",
    "tokenizer_fingerprint",
]
