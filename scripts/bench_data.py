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
  shuffle, tokenize, join with BOS/EOS, pack, write), the same texts, max_length 1024, with
  ``TOKENIZERS_PARALLELISM=false``: its parallelism is its own threads (``num_proc``);
- ratio: tokenize+pack over raw throughput, the two alternated in one child (best of 3 passes
  each, so both see the same load of a shared machine), in wall time and in CPU time (the
  pipeline's own cost, which no neighbour changes); medians over rounds; peak RSS of the child;
- stream: peak RSS while streaming 1, 4 and 16 (distinct) copies of the corpus to the end on 1, 2
  and all cores, tokenizing and packing on the fly, and the RSS before the first document; on all
  cores also with ``data.steady_memory=false`` (glibc's and Arrow's default allocator behaviour,
  unbounded tokenizer calls), the option's measured effect.
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


def child_throughput(tokenizer_name: str, max_documents: int | None, cache: str) -> dict:
    """Raw batched tokenizing and the full build on the same texts, alternated so that both see
    the same load of a shared machine, each the best of `PASSES` passes, in wall and CPU time."""
    from dprope.data import EMBEDDED, build_train_dataset, load_tokenizer
    from dprope.data.tokenizer import encode_texts

    tokenizer = load_tokenizer(tokenizer_name)
    texts = corpus_texts(max_documents)
    cfg = dataclasses.replace(EMBEDDED, max_documents=max_documents, max_length=MAX_LENGTH, batch_size=BATCH)
    best = {"raw": float("inf"), "build": float("inf"), "raw_cpu": float("inf"), "build_cpu": float("inf")}
    for attempt in range(PASSES):
        wall, cpu = time.perf_counter(), time.process_time()
        os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the baseline: the tokenizer's own threads
        batches = range(0, len(texts), BATCH)
        num_tokens = sum(len(ids) for i in batches for ids in encode_texts(tokenizer, texts[i : i + BATCH]))
        best["raw"] = min(best["raw"], time.perf_counter() - wall)
        best["raw_cpu"] = min(best["raw_cpu"], time.process_time() - cpu)

        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the pipeline's parallelism is its threads
        wall, cpu = time.perf_counter(), time.process_time()
        dataset = build_train_dataset(
            dataclasses.replace(cfg, cache_path=f"{cache}/{attempt}"), tokenizer, tokenizer_name, None, None
        )
        best["build"] = min(best["build"], time.perf_counter() - wall)
        best["build_cpu"] = min(best["build_cpu"], time.process_time() - cpu)
        assert (
            not dataset.from_cache
            and dataset.meta["num_tokens"] == num_tokens + 2 * dataset.meta["num_documents"]
        )
    return {"tokens": num_tokens, **{k: num_tokens / v for k, v in best.items()}, "peak": peak_rss_mib()}


def child_stream(tokenizer_name: str, corpus: str, cache: str, steady: str) -> dict:
    import psutil

    from dprope.data import build_train_dataset, data_config, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    cfg = data_config(
        {"name": "bench", "source": "files", "paths": {"train": [corpus]}, "streaming": True,
         "max_length": MAX_LENGTH, "batch_size": BATCH, "cache_dir": cache, "steady_memory": steady == "on"}
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
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
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
        result = child_throughput(rest[0], None if rest[1] == "all" else int(rest[1]), rest[2])
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
        print(
            "| tokenizer | cores | tokens | raw tok/s | tokenize+pack tok/s | ratio | ratio in CPU time "
            "| peak RSS |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, name in tokenizers_used.items():
            for cores in core_counts():
                rounds = [
                    run_child(
                        cores, ["throughput", name, docs, str(Path(tmp) / f"cache-{label}-{cores}-{r}")]
                    )
                    for r in range(args.repeats)
                ]

                def median(field: str) -> float:
                    return statistics.median(r[field] for r in rounds)  # noqa: B023

                print(
                    f"| {label} | {cores} | {rounds[0]['tokens'] / 1e6:.1f}M | {median('raw') / 1e6:.2f}M "
                    f"| {median('build') / 1e6:.2f}M | {statistics.median(r['build'] / r['raw'] for r in rounds):.0%} "
                    f"| {statistics.median(r['build_cpu'] / r['raw_cpu'] for r in rounds):.0%} "
                    f"| {median('peak'):.0f} MiB |",
                    flush=True,
                )
        print(
            "\n| tokenizer | cores | steady_memory | streamed corpus | sequences | stream tok/s | RSS before "
            "| peak RSS | peak / x1 |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for label, name in tokenizers_used.items():
            runs = [(cores, "on") for cores in core_counts()] + [(core_counts()[-1], "off")]
            for cores, steady in runs:
                first = None
                for copies, path in corpora.items():
                    r = run_child(
                        cores, ["stream", name, str(path), str(Path(tmp) / f"stream-{copies}"), steady]
                    )
                    first = first or r["peak"]
                    print(
                        f"| {label} | {cores} | {steady} | x{copies} ({copies * size_mb:.0f} MB) | {r['sequences']} "
                        f"| {r['tok_s'] / 1e6:.2f}M | {r['before']:.0f} MiB | {r['peak']:.0f} MiB "
                        f"| {r['peak'] / first:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
