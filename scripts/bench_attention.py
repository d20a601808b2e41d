"""Attention modes on packed data: attention FLOPs per step and measured tokens/s.

    python scripts/bench_attention.py --smoke                       # CPU, tiny model, seconds
    python scripts/bench_attention.py --preset llama2_7b --length 16384 --doc-length exp:2048

Documents of random length (``--doc-length``: ``exp:MEAN`` exponential, ``fixed:N``, or
``uniform:LOW,HIGH``) are packed by the project's own packing (`dprope.data.packing`) into
windows of ``--length`` tokens and collated for each mode as training does. Each row times
forward + backward of the model (no optimizer, no DeepSpeed) with the kernel training would pick
and the inputs that mode gives that kernel (the attention-mode registry, `dprope.train.attention`);
``--kernels sdpa,flex_attention,flash_attention_2`` adds a row per kernel and mode, each with its
peak memory (device memory allocated on CUDA, the resident set size on the CPU).

Attention FLOPs (analytic, forward + backward): only query-key pairs the mask lets through
count. Per layer and head, ``QK^T`` and ``PV`` cost 2 x pairs x head_dim multiply-adds = 4 x
pairs x head_dim FLOPs in the forward, and the backward twice that, so 12 x pairs x head_dim x
heads x layers per step; causal has T (T + 1) / 2 pairs per row, document and anchor the sum of
n (n + 1) / 2 over their segments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dprope.data.packing import pack_stream  # noqa: E402
from dprope.train.attention import ATTENTION_MODES, resolve_implementation, visible_pairs  # noqa: E402

BOS, EOS, PAD = 1, 2, 0


def document_lengths(spec: str, rng: np.random.Generator, total: int) -> list[int]:
    """Random document lengths (at least 3: BOS, one token, EOS) summing to at least ``total``."""
    kind, _, args = spec.partition(":")
    values = [float(v) for v in args.split(",")] if args else []
    lengths: list[int] = []
    while sum(lengths) < total:
        if kind == "exp" and len(values) == 1:
            length = rng.exponential(values[0])
        elif kind == "fixed" and len(values) == 1:
            length = values[0]
        elif kind == "uniform" and len(values) == 2:
            length = rng.uniform(values[0], values[1])
        else:
            raise SystemExit(
                f"error: --doc-length: expected exp:MEAN, fixed:N or uniform:LOW,HIGH (got {spec!r})"
            )
        lengths.append(max(3, int(length)))
    return lengths


def packed_items(length: int, batch: int, spec: str, seed: int, vocab: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    documents = []
    for n in document_lengths(spec, rng, length * batch):
        body = rng.integers(3, vocab, n - 2)
        documents.append(np.concatenate([[BOS], body, [EOS]]).astype(np.int64))
    sequences = list(pack_stream(documents, length, True, PAD))[:batch]
    return [
        {
            "input_ids": torch.from_numpy(s.input_ids),
            "doc_starts": torch.from_numpy(s.doc_starts),
            "length": s.length,
        }
        for s in sequences
    ]


def collate(items: list[dict], mode: str) -> dict:
    return ATTENTION_MODES[mode].collate(BOS)(items)


def attention_flops(batch: dict, mode: str, heads: int, head_dim: int, layers: int) -> int:
    rows, seq = batch["input_ids"].shape
    pairs = rows * seq * (seq + 1) // 2 if mode == "causal" else visible_pairs(batch["segment_ids"])
    return 12 * pairs * head_dim * heads * layers


def measure(model_cfg, items: list[dict], mode: str, implementation: str, args, device, dtype) -> dict:
    """One row: forward + backward of ``mode`` with ``implementation``, timed after a warm-up, and
    the peak memory of those steps (`dprope.train.metrics.peak_memory_gib`)."""
    from transformers import AutoModelForCausalLM

    from dprope.train.metrics import peak_memory_gib

    cuda = device.type == "cuda"
    hf_config = model_cfg.hf_config()
    if args.layers is not None:
        hf_config.num_hidden_layers = args.layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=implementation).to(
        device
    )
    if cuda:  # as training at 8k-16k; the tiny CPU shapes need no recomputation
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = collate(items, mode)
    flops = attention_flops(
        batch, mode, hf_config.num_attention_heads, model_cfg.head_dim, hf_config.num_hidden_layers
    )
    times = []
    peak_memory_gib(reset=True)
    for step in range(args.steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**ATTENTION_MODES[mode].inputs(batch, implementation, device, dtype)).loss.backward()
        if cuda:
            torch.cuda.synchronize()
        if step:  # the first step warms up (allocations, compilation)
            times.append(time.perf_counter() - start)
    peak = peak_memory_gib(reset=True)
    del model
    if cuda:
        torch.cuda.empty_cache()
    seconds = float(np.median(times))
    return {
        "mode": mode,
        "implementation": implementation,
        "kernel": ATTENTION_MODES[mode].describe(implementation),
        "attention_flops": flops,
        "attention_tflop_per_step": flops / 1e12,
        "step_time_s": seconds,
        "tokens_per_s": args.batch * args.length / seconds,
        "peak_memory_gib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="model preset of configs/model (random init)")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the preset's)")
    parser.add_argument("--length", type=int, default=1024, help="tokens per packed window")
    parser.add_argument("--batch", type=int, default=1, help="windows per step")
    parser.add_argument("--doc-length", default="exp:256", help="exp:MEAN | fixed:N | uniform:LOW,HIGH")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up)")
    parser.add_argument("--modes", default=",".join(ATTENTION_MODES), help="comma-separated attention modes")
    parser.add_argument(
        "--kernels",
        default="auto",
        help="comma-separated trainer.attn_implementation values, each a row per mode "
        "(auto, sdpa, flex_attention, flash_attention_2, eager); one that cannot run is a row saying why",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 128 tokens x 2, 1 timed step (CPU)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.length, args.batch, args.steps, args.doc_length = "tiny", 128, 2, 1, "exp:32"

    from dprope import accelerator
    from dprope.cli import compose_config
    from dprope.config import ConfigError, first_line, to_typed

    model_cfg = to_typed(compose_config("train", [f"model={args.preset}"]).model, "model")
    device = accelerator.device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    items = packed_items(args.length, args.batch, args.doc_length, args.seed, model_cfg.vocab_size)
    rows = []
    for kernel in args.kernels.split(","):
        for mode in args.modes.split(","):
            try:
                implementation = resolve_implementation(kernel, ATTENTION_MODES[mode])
            except ConfigError as err:
                rows.append({"mode": mode, "implementation": kernel, "skipped": str(err)})
                continue
            try:
                rows.append(measure(model_cfg, items, mode, implementation, args, device, dtype))
            except (RuntimeError, NotImplementedError) as err:  # out of memory, a kernel's refusal
                rows.append({"mode": mode, "implementation": implementation, "failed": first_line(err)})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    for row in rows:  # against causal attention with the same kernel
        causal = next(
            (r for r in rows if r["mode"] == "causal" and r["implementation"] == row["implementation"]), None
        )
        if not is_measured(row) or causal is None or not is_measured(causal):
            row["attention_flops_vs_causal"] = row["step_time_vs_causal"] = None
            continue
        row["attention_flops_vs_causal"] = row["attention_flops"] / causal["attention_flops"]
        row["step_time_vs_causal"] = row["step_time_s"] / causal["step_time_s"]
    layers = args.layers or model_cfg.num_hidden_layers
    print(
        f"{args.preset} ({layers} layers), {args.length} tokens x {args.batch}, documents {args.doc_length}, "
        f"{device}, {dtype}"
    )
    print(
        f"{'mode':<10}{'attn TFLOP/step':>17}{'vs causal':>11}{'step s':>10}{'time vs causal':>16}"
        f"{'tokens/s':>11}{'peak GiB':>10}"
    )
    for row in rows:
        if not is_measured(row):
            print(
                f"{row['mode']:<10}{row['implementation']}: {row.get('skipped') or 'failed: ' + row['failed']}"
            )
            continue
        ratio, time_ratio = row["attention_flops_vs_causal"], row["step_time_vs_causal"]
        print(
            f"{row['mode']:<10}{row['attention_tflop_per_step']:>17.3e}"
            f"{'' if ratio is None else f'{ratio:.3f}':>11}{row['step_time_s']:>10.3f}"
            f"{'' if time_ratio is None else f'{time_ratio:.3f}':>16}{row['tokens_per_s']:>11.0f}"
            f"{row['peak_memory_gib']:>10.2f}   {row['kernel']}"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    return 0 if all("failed" not in row for row in rows) else 1


def is_measured(row: dict) -> bool:
    return "skipped" not in row and "failed" not in row


if __name__ == "__main__":
    raise SystemExit(main())
