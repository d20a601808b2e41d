"""Throughput and memory of the data pipeline on the embedded corpus.

    python scripts/bench_data.py           # the byte tokenizer and a BPE trained here on the corpus
    python scripts/bench_data.py --quick   # a quarter of the corpus, the byte tokenizer only

Per tokenizer and per parallelism (one core: one process, TOKENIZERS_PARALLELISM=false; all
cores: `num_proc` = CPUs for the build, the tokenizer's own threads for the raw call):

- raw: the tokenizer's batched call alone (`encode_texts`, 64 documents a call) on the texts
  already in memory;
- tokenize+pack: `build_train_dataset` from the files to a complete cache on disk (read,
  shuffle, tokenize, join with BOS/EOS, pack, write), the same texts, max_length 1024;
- stream: RSS while streaming 1, 4 and 16 (distinct) copies of the corpus to the end, tokenizing and
  packing on the fly: before the first document, the median of samples every 256 sequences,
  and the peak. Flat memory: the same figures at every size once warm, up to the transient of one
  tokenizer batch (its `Encoding` objects), which depends on the documents drawn together.

Each figure comes from a fresh child process, so that peak RSS and the tokenizer's thread pool
belong to that measurement alone.
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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def corpus_texts(max_documents: int | None) -> list[str]:
    from dprope.data.embedded import embedded_files

    return [Path(p).read_text(errors="replace") for p in embedded_files("train")[:max_documents]]


def child_throughput(tokenizer_name: str, procs: int, max_documents: int | None, cache: str) -> dict:
    """Raw batched tokenizing and the full build on the same texts, each the best of three passes
    (this measures the code, not a neighbour's load on a shared machine)."""
    from dprope.data import EMBEDDED, build_train_dataset, load_tokenizer
    from dprope.data.tokenizer import encode_texts

    tokenizer = load_tokenizer(tokenizer_name)
    texts = corpus_texts(max_documents)
    cfg = dataclasses.replace(
        EMBEDDED, max_documents=max_documents, max_length=MAX_LENGTH, batch_size=BATCH, num_proc=procs
    )
    raw_s = build_s = float("inf")
    for attempt in range(3):
        start = time.perf_counter()
        batches = range(0, len(texts), BATCH)
        num_tokens = sum(len(ids) for i in batches for ids in encode_texts(tokenizer, texts[i : i + BATCH]))
        raw_s = min(raw_s, time.perf_counter() - start)

        start = time.perf_counter()
        dataset = build_train_dataset(
            dataclasses.replace(cfg, cache_path=f"{cache}/{attempt}"), tokenizer, tokenizer_name, None, None
        )
        build_s = min(build_s, time.perf_counter() - start)
        assert (
            not dataset.from_cache
            and dataset.meta["num_tokens"] == num_tokens + 2 * dataset.meta["num_documents"]
        )
    return {"tokens": num_tokens, "raw": num_tokens / raw_s, "build": num_tokens / build_s}


def child_stream(tokenizer_name: str, corpus: str, cache: str) -> dict:
    import psutil

    from dprope.data import build_train_dataset, data_config, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    cfg = data_config(
        {"name": "bench", "source": "files", "paths": {"train": [corpus]}, "streaming": True,
         "max_length": MAX_LENGTH, "batch_size": BATCH, "cache_dir": cache}
    )  # fmt: skip
    stream = build_train_dataset(cfg, tokenizer, tokenizer_name, None, None)
    process = psutil.Process()
    baseline = process.memory_info().rss / 2**20
    samples = []
    start = time.perf_counter()
    sequences = 0
    for sequences, _ in enumerate(stream, 1):
        if sequences % 256 == 0:
            samples.append(process.memory_info().rss / 2**20)
    seconds = time.perf_counter() - start
    return {
        "sequences": sequences,
        "tok_s": sequences * MAX_LENGTH / seconds,
        "baseline": baseline,
        "median": statistics.median(samples),
        "peak": peak_rss_mib(),
    }


def run_child(args: list[str], threads: bool) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true" if threads else "false", "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the corpus, byte tokenizer only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "throughput":
            result = child_throughput(
                rest[0], int(rest[1]), None if rest[2] == "all" else int(rest[2]), rest[3]
            )
        else:
            result = child_stream(*rest)
        print(json.dumps(result))
        return

    from dprope.data.tokenizer import bpe_tokenizer

    cpus = len(os.sched_getaffinity(0))
    max_documents = 217 if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = {"byte": "byte"}
        if not args.quick:
            bpe_dir = Path(tmp) / "bpe32k"
            bpe_tokenizer(corpus_texts(None), vocab_size=32000).save_pretrained(bpe_dir)
            tokenizers["bpe-32k"] = str(bpe_dir)
        texts = corpus_texts(max_documents)
        corpora = {}
        for copies in (1, 4, 16):
            corpora[copies] = Path(tmp) / f"corpus_x{copies}.jsonl"
            with open(corpora[copies], "w") as f:
                for copy in range(copies):  # distinct texts: no copy hits a tokenizer cache warmed by another
                    f.writelines(json.dumps({"text": f"# copy {copy}\n{t}"}) + "\n" for t in texts)
        size_mb = sum(len(t.encode()) for t in texts) / 1e6
        print(
            f"embedded corpus: {len(texts)} documents, {size_mb:.1f} MB; {cpus} CPUs; max_length {MAX_LENGTH}\n"
        )
        print("| tokenizer | parallelism | tokens | raw tok/s | tokenize+pack tok/s | ratio |")
        print("|---|---|---|---|---|---|")
        docs = "all" if max_documents is None else str(max_documents)
        for label, name in tokenizers.items():
            for parallel, procs in (("1 core", 1), (f"{cpus} cores", cpus)):
                cache = str(Path(tmp) / f"cache-{label}-{procs}")
                r = run_child(["throughput", name, str(procs), docs, cache], threads=procs > 1)
                print(
                    f"| {label} | {parallel} | {r['tokens'] / 1e6:.1f}M | {r['raw'] / 1e6:.2f}M "
                    f"| {r['build'] / 1e6:.2f}M | {r['build'] / r['raw']:.0%} |"
                )
        print(
            "\n| tokenizer | streamed corpus | sequences | stream tok/s | RSS before | median RSS | peak RSS |"
        )
        print("|---|---|---|---|---|---|---|")
        for label, name in tokenizers.items():
            for copies, path in corpora.items():
                r = run_child(["stream", name, str(path), str(Path(tmp) / f"stream-{copies}")], threads=True)
                print(
                    f"| {label} | x{copies} ({copies * size_mb:.0f} MB) | {r['sequences']} | {r['tok_s'] / 1e6:.2f}M "
                    f"| {r['baseline']:.0f} MiB | {r['median']:.0f} MiB | {r['peak']:.0f} MiB |"
                )


if __name__ == "__main__":
    main()
