"""Throughput and memory of the data pipeline on the embedded corpus, at 1, 2 and all cores.

    python scripts/bench_data.py               # byte tokenizer and a 32k BPE trained here on the corpus
    python scripts/bench_data.py --quick       # a quarter of the corpus, byte tokenizer, no x16 stream
    python scripts/bench_data.py --repeats 3   # medians of 3 rounds (a shared machine is noisy)

Every figure comes from a fresh child process pinned to the first k CPUs (`sched_setaffinity`
before anything is imported, so the tokenizer's thread pool and the build's default ``num_proc``
both see k cores), so each peak RSS belongs to that measurement alone:

- raw: the tokenizer's own batched call (`encode_texts`, 64 documents a call, its Rust
  parallelism on with ``TOKENIZERS_PARALLELISM=true``) on the texts already in memory;
- tokenize+pack: `build_train_dataset` from the files to a complete cache on disk (read,
  shuffle, tokenize, join with BOS/EOS, pack, write), the same texts, max_length 1024;
- ratio: tokenize+pack over raw throughput (each child keeps its best of 3 passes, the table
  shows the median over rounds);
- stream: peak RSS while streaming 1, 4 and 16 (distinct) copies of the corpus to the end on all
  cores, tokenizing and packing on the fly, and the RSS before the first document.

The raw children run with ``TOKENIZERS_PARALLELISM=true`` (the tokenizer's own threads); the
build and stream children with ``false``, their parallelism being the pipeline's threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAX_LENGTH = 1024
BATCH = 64
PASSES = 3


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def corpus_texts(max_documents: int | None) -> list[str]:
    from dprope.data.embedded import embedded_files

    return [Path(p).read_text(errors="replace") for p in embedded_files("train")[:max_documents]]


def child_raw(tokenizer_name: str, max_documents: int | None) -> dict:
    """The tokenizer alone, best of `PASSES` passes over the texts in memory."""
    from dprope.data import load_tokenizer
    from dprope.data.tokenizer import encode_texts

    tokenizer = load_tokenizer(tokenizer_name)
    texts = corpus_texts(max_documents)
    best = float("inf")
    for _ in range(PASSES):
        start = time.perf_counter()
        batches = range(0, len(texts), BATCH)
        num_tokens = sum(len(ids) for i in batches for ids in encode_texts(tokenizer, texts[i : i + BATCH]))
        best = min(best, time.perf_counter() - start)
    return {"tokens": num_tokens, "tok_s": num_tokens / best, "peak": peak_rss_mib()}


def child_build(tokenizer_name: str, max_documents: int | None, cache: str) -> dict:
    """The full build to a fresh cache directory, best of `PASSES` passes (the first one also pays
    the lazy imports of `datasets`, as a real first build does)."""
    from dprope.data import EMBEDDED, build_train_dataset, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    cfg = dataclasses.replace(EMBEDDED, max_documents=max_documents, max_length=MAX_LENGTH, batch_size=BATCH)
    best = float("inf")
    for attempt in range(PASSES):
        start = time.perf_counter()
        dataset = build_train_dataset(
            dataclasses.replace(cfg, cache_path=f"{cache}/{attempt}"), tokenizer, tokenizer_name, None, None
        )
        best = min(best, time.perf_counter() - start)
        assert not dataset.from_cache
    num_tokens = dataset.meta["num_tokens"] - 2 * dataset.meta["num_documents"]  # without BOS/EOS, as raw
    return {"tokens": num_tokens, "tok_s": num_tokens / best, "peak": peak_rss_mib()}


def child_stream(tokenizer_name: str, corpus: str, cache: str) -> dict:
    import psutil

    from dprope.data import build_train_dataset, data_config, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    cfg = data_config(
        {"name": "bench", "source": "files", "paths": {"train": [corpus]}, "streaming": True,
         "max_length": MAX_LENGTH, "batch_size": BATCH, "cache_dir": cache}
    )  # fmt: skip
    stream = build_train_dataset(cfg, tokenizer, tokenizer_name, None, None)
    before = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    sequences = sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    return {
        "sequences": sequences,
        "tok_s": sequences * MAX_LENGTH / seconds,
        "before": before,
        "peak": peak_rss_mib(),
    }


def run_child(cores: int, args: list[str]) -> dict:
    # the raw baseline is the tokenizer's own parallelism; the pipeline's is its threads (num_proc)
    parallel = "true" if args[0] == "raw" else "false"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": parallel, "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(cores), *args], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(cores: int, kind: str, rest: list[str]) -> None:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])  # before any thread pool exists
    if kind == "stream":
        result = child_stream(*rest)
    else:
        docs = None if rest[1] == "all" else int(rest[1])
        result = child_raw(rest[0], docs) if kind == "raw" else child_build(rest[0], docs, rest[2])
    print(json.dumps(result))


def core_counts() -> list[int]:
    cpus = len(os.sched_getaffinity(0))
    return sorted({1, min(2, cpus), cpus})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the corpus, byte tokenizer only")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of throughput children (median)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(int(args.child[0]), args.child[1], args.child[2:])
        return

    import datasets
    import tokenizers
    import transformers

    from dprope.data.tokenizer import bpe_tokenizer

    max_documents = 217 if args.quick else None
    docs = "all" if max_documents is None else str(max_documents)
    sizes = (1, 4) if args.quick else (1, 4, 16)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers_used = {"byte": "byte"}
        if not args.quick:
            bpe_dir = Path(tmp) / "bpe32k"
            bpe_tokenizer(corpus_texts(None), vocab_size=32000).save_pretrained(bpe_dir)
            tokenizers_used["bpe-32k"] = str(bpe_dir)
        texts = corpus_texts(max_documents)
        corpora = {}
        for copies in sizes:
            corpora[copies] = Path(tmp) / f"corpus_x{copies}.jsonl"
            with open(corpora[copies], "w") as f:
                for copy in range(copies):  # distinct texts: no copy hits a tokenizer cache warmed by another
                    f.writelines(json.dumps({"text": f"# copy {copy}\n{t}"}) + "\n" for t in texts)
        size_mb = sum(len(t.encode()) for t in texts) / 1e6
        print(
            f"embedded corpus: {len(texts)} documents, {size_mb:.1f} MB; {len(os.sched_getaffinity(0))} CPUs; "
            f"max_length {MAX_LENGTH}; Python {sys.version.split()[0]}, tokenizers {tokenizers.__version__}, "
            f"datasets {datasets.__version__}, transformers {transformers.__version__}; "
            f"medians of {args.repeats} round(s)\n"
        )
        print("| tokenizer | cores | tokens | raw tok/s | tokenize+pack tok/s | ratio | build peak RSS |")
        print("|---|---|---|---|---|---|---|")
        for label, name in tokenizers_used.items():
            for cores in core_counts():
                raw, build = [], []
                for repeat in range(args.repeats):
                    raw.append(run_child(cores, ["raw", name, docs]))
                    cache = str(Path(tmp) / f"cache-{label}-{cores}-{repeat}")
                    build.append(run_child(cores, ["build", name, docs, cache]))
                raw_s = statistics.median(r["tok_s"] for r in raw)
                build_s = statistics.median(r["tok_s"] for r in build)
                print(
                    f"| {label} | {cores} | {raw[0]['tokens'] / 1e6:.1f}M | {raw_s / 1e6:.2f}M "
                    f"| {build_s / 1e6:.2f}M | {build_s / raw_s:.0%} "
                    f"| {statistics.median(r['peak'] for r in build):.0f} MiB |",
                    flush=True,
                )
        print(
            "\n| tokenizer | cores | streamed corpus | sequences | stream tok/s | RSS before | peak RSS | peak / x1 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, name in tokenizers_used.items():
            for cores in core_counts()[-1:]:
                first = None
                for copies, path in corpora.items():
                    r = run_child(cores, ["stream", name, str(path), str(Path(tmp) / f"stream-{copies}")])
                    first = first or r["peak"]
                    print(
                        f"| {label} | {cores} | x{copies} ({copies * size_mb:.0f} MB) | {r['sequences']} "
                        f"| {r['tok_s'] / 1e6:.2f}M | {r['before']:.0f} MiB | {r['peak']:.0f} MiB "
                        f"| {r['peak'] / first:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
