"""Training speed and memory: the HF Trainer stack against dprope, on the same model and data.

    python scripts/bench_train.py --layers 4 --seq 8192 16384     # one GPU, LLaMA-2-7B shape
    python scripts/bench_train.py --smoke                         # the tiny preset on CPU, under a minute

Configurations (`--configs`, default all):
  hf_trainer    (a) transformers `Trainer` with the same DeepSpeed ZeRO-3 config dprope generates
                    (the stack YaRN and LongLoRA fine-tune with)
  dprope_none   (b) dprope's engine and training step, `trainer.kernels=none`
  dprope_liger  (c) the same with `trainer.kernels=liger`

Every configuration trains a randomly initialised model of the `configs/model` preset `--model`
(default llama2_7b: hidden 4096, 32 heads of 128, intermediate 11008, vocab 32000; `--layers N`
layers so it fits one GPU) on the same seeded random tokens: micro batch 1, bf16 on GPU,
gradient checkpointing, ZeRO-3, AdamW, DPRoPE at s = seq / L. The run is composed and planned as
the trainer does it (`dprope.train.plan`), so (b) and (c) measure the trainer's own path: its
kernels, attention, model transforms, engine and `Stepper`; (a) trains the same model with the
plan's DeepSpeed config. Each runs in its own process, so peak memory figures are its own. Columns: tokens/s and MFU over the
steps after `--warmup`, peak allocated and reserved GiB (on CPU: the peak resident set size, no
reserved figure), and the ratios to (a). MFU follows `dprope.train.metrics` (PaLM's FLOPs per
token over the GPU's dense bf16 peak, `--peak-tflops` for another device).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT_PREFIX = "BENCH_RESULT "
# name -> (table label, the training overrides it adds); a new option is one more entry
CONFIGS = {
    "hf_trainer": ("(a) HF Trainer + DeepSpeed ZeRO-3", ["trainer.kernels=none"]),
    "dprope_none": ("(b) dprope, kernels=none", ["trainer.kernels=none"]),
    "dprope_liger": ("(c) dprope, kernels=liger", ["trainer.kernels=liger"]),
}
BASELINE = "hf_trainer"


# ---------------------------------------------------------------- one configuration (worker)


def compose_run(spec: dict):
    """The training run of a configuration: the model preset with random weights and ``layers``
    decoder layers, DPRoPE at s = seq / L, ZeRO-3 with gradient checkpointing, micro batch 1."""
    from dprope.cli import compose_config
    from dprope.train.config import RunConfig

    cfg = compose_config(
        "train",
        [
            f"model={spec['model']}",
            "model.pretrained=null",  # random init: speed and memory only
            "model.tokenizer=byte",  # unused: the tokens are random
            f"model.num_hidden_layers={spec['layers']}",
            "rope=dprope",
            f"data.max_length={spec['seq']}",
            "trainer=zero3",
            f"trainer.output_dir={spec['output_dir']}",
            f"trainer.steps={spec['warmup'] + spec['steps']}",
            "trainer.global_batch_size=1",
            "trainer.micro_batch_size=1",
            "trainer.gradient_checkpointing=true",
            f"trainer.attn_implementation={spec['attention']}",
            "trainer.save_every=0",
            "trainer.export=false",
            f"trainer.seed={spec['seed']}",
            *CONFIGS[spec["config"]][1],
        ],
    )
    cfg.rope.factor = max(1.0, spec["seq"] / cfg.model.original_max_position_embeddings)
    return RunConfig.from_config(cfg)


def _setup(spec: dict):
    """The parts every configuration shares: the planned run, its process group and the tokens."""
    import torch

    from dprope.train.engine import init_distributed
    from dprope.train.plan import plan_run

    run = compose_run(spec)
    plan = plan_run(run, world_size=1)  # one process per configuration
    generator = torch.Generator().manual_seed(spec["seed"])
    rows = torch.randint(4, run.model.vocab_size, (run.trainer.steps, spec["seq"]), generator=generator)
    return plan, rows, init_distributed()


def _run_dprope(spec: dict) -> dict:
    """The trainer's own path: the plan materialised (`materialise`) and stepped (`Stepper`)."""
    import torch

    from dprope.train.engine import materialise
    from dprope.train.metrics import non_embedding_parameters
    from dprope.train.stepper import Stepper

    plan, rows, runtime = _setup(spec)
    built = materialise(plan, runtime)
    collate = plan.mode.collate(None)  # causal: packed rows, one document each
    batches = (collate([{"input_ids": row, "doc_starts": torch.tensor([0])}]) for row in rows)
    stepper = Stepper(built.engine, built.micro_step, batches, plan.accumulation, runtime.device)
    times, losses = [], []
    for step in range(plan.trainer.steps):
        result = stepper.step()
        losses.append(result.loss)
        if step >= spec["warmup"]:
            times.append(result.elapsed)
    return {
        "times": times,
        "losses": losses,
        "params": non_embedding_parameters(built.engine.module),
        "attention": plan.implementation,
        "kernels": plan.kernels,
        "precision": plan.precision,
    }


def _run_hf_trainer(spec: dict) -> dict:
    """transformers' Trainer with the DeepSpeed config dprope's plan generates for the same run."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from dprope.train.engine import build_model
    from dprope.train.metrics import non_embedding_parameters

    plan, rows, runtime = _setup(spec)
    trainer = plan.trainer
    cuda = runtime.device.type == "cuda"
    model = build_model(plan.model, plan.hf_config, plan.precision, plan.implementation, trainer.seed)
    params = non_embedding_parameters(model)
    times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            if state.global_step > spec["warmup"]:
                times.append(time.perf_counter() - self.start)

    args = TrainingArguments(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        max_steps=trainer.steps,
        learning_rate=trainer.lr,
        adam_beta1=trainer.betas[0],
        adam_beta2=trainer.betas[1],
        adam_epsilon=trainer.eps,
        weight_decay=trainer.weight_decay,
        max_grad_norm=trainer.grad_clip,
        lr_scheduler_type="constant",
        bf16=plan.precision == "bf16",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        deepspeed=plan.deepspeed_config(),
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=trainer.seed,
    )
    dataset = [{"input_ids": row, "labels": row} for row in rows]
    hf_trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[StepTimer()])
    output = hf_trainer.train()
    return {
        "times": times,
        "losses": [output.training_loss],
        "params": params,
        "attention": plan.implementation,
        "kernels": "none",
        "precision": plan.precision,
    }


def _peak_memory() -> tuple[float, float | None]:
    import resource

    import torch

    from dprope.accelerator import on_cuda

    if on_cuda():
        return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, None


def worker(spec: dict) -> dict:
    """Run one configuration and measure it (called in its own process)."""
    from dprope.config import ConfigError
    from dprope.train.metrics import flops_per_token, peak_flops

    try:
        measured = _run_hf_trainer(spec) if spec["config"] == BASELINE else _run_dprope(spec)
    except ConfigError as err:  # e.g. liger without CUDA: reported, not measured
        return {"config": spec["config"], "seq": spec["seq"], "skipped": str(err)}
    allocated, reserved = _peak_memory()
    model = compose_run(spec).model
    per_token = flops_per_token(
        measured["params"], model.num_hidden_layers, model.num_attention_heads, model.head_dim, spec["seq"]
    )
    seconds = sum(measured["times"]) / max(len(measured["times"]), 1)
    tokens_per_s = spec["seq"] / seconds if seconds > 0 else None
    peak = peak_flops(spec["peak_tflops"])
    return {
        "config": spec["config"],
        "seq": spec["seq"],
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * per_token / peak if peak and tokens_per_s else None,
        "peak_allocated_gib": allocated,
        "peak_reserved_gib": reserved,
        "step_times_s": measured["times"],
        "losses": measured["losses"],
        "flops_per_token": per_token,
        "attention": measured["attention"],
        "kernels": measured["kernels"],
        "precision": measured["precision"],
    }


# ---------------------------------------------------------------- the driver


def cannot_run(spec: dict) -> str | None:
    """Why a configuration cannot run on this machine (liger without CUDA): its plan's refusal,
    known without a process."""
    from dprope.config import ConfigError
    from dprope.train.plan import plan_run

    try:
        plan_run(compose_run(spec), world_size=1)
    except ConfigError as err:
        return str(err)
    return None


def run_one(spec: dict, timeout: float) -> dict:
    """One configuration in a fresh process; a failure (out of memory, ...) becomes a row."""
    reason = cannot_run(spec)
    if reason is not None:
        return {"config": spec["config"], "seq": spec["seq"], "skipped": reason}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("WANDB_MODE", "disabled")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # each worker is its own group of one
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": spec["config"], "seq": spec["seq"], "failed": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return {"config": spec["config"], "seq": spec["seq"], "failed": last[:300]}


def environment() -> dict:
    import torch

    from dprope.accelerator import on_cuda

    versions = {}
    for package in ("torch", "transformers", "deepspeed", "liger-kernel", "flash-attn"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    device = (
        torch.cuda.get_device_name()
        if on_cuda()
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    return {"device": device, "date": datetime.date.today().isoformat(), "versions": versions}


def _number(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(value, base) -> str:
    return "n/a" if value is None or not base else f"{value / base:.2f}x"


def table(results: list[dict]) -> str:
    header = (
        "| seq | configuration | tokens/s | MFU | peak alloc GiB | peak reserved GiB | tokens/s vs (a) | "
        "peak alloc vs (a) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in results:
        name = CONFIGS[row["config"]][0] if row["config"] in CONFIGS else row["config"]
        if "skipped" in row or "failed" in row:
            why = row.get("skipped") or f"failed: {row['failed']}"
            lines.append(f"| {row['seq']} | {name} | {why} | | | | | |")
            continue
        base = next(
            (
                r
                for r in results
                if r["config"] == BASELINE and r["seq"] == row["seq"] and "tokens_per_s" in r
            ),
            {},
        )
        lines.append(
            f"| {row['seq']} | {name} | {_number(row['tokens_per_s'], 1)} | {_number(row['mfu'], 3)} | "
            f"{_number(row['peak_allocated_gib'], 2)} | {_number(row['peak_reserved_gib'], 2)} | "
            f"{_ratio(row['tokens_per_s'], base.get('tokens_per_s'))} | "
            f"{_ratio(row['peak_allocated_gib'], base.get('peak_allocated_gib'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="llama2_7b", help="model preset of configs/model (random init)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the preset's shape")
    parser.add_argument("--seq", type=int, nargs="+", default=[8192, 16384], help="sequence lengths")
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--attention", default="auto", help="trainer.attn_implementation for every configuration"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    parser.add_argument("--output", type=Path, default=None, help="directory for bench_train.json and .md")
    parser.add_argument(
        "--smoke", action="store_true", help="the tiny preset on CPU: 2 layers, seq 128, 2 steps"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        print(RESULT_PREFIX + json.dumps(worker(spec)), flush=True)
        return 0

    if args.smoke:  # the tiny preset on the CPU, in this process and in every worker
        from dprope.accelerator import cpu_only_environment

        os.environ.update(cpu_only_environment())
    model = "tiny" if args.smoke else args.model
    layers, seqs = (2, [128]) if args.smoke else (args.layers, args.seq)
    steps, warmup = (2, 1) if args.smoke else (args.steps, args.warmup)
    env = environment()
    print(
        f"device: {env['device']}; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), flush=True
    )
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for seq in seqs:
            for config in args.configs:
                spec = {
                    "config": config,
                    "seq": seq,
                    "model": model,
                    "layers": layers,
                    "steps": steps,
                    "warmup": warmup,
                    "attention": args.attention,
                    "peak_tflops": args.peak_tflops,
                    "seed": args.seed,
                    "output_dir": str(Path(scratch) / f"{config}_{seq}"),
                }
                results.append(run_one(spec, args.timeout))
                print(f"  {config} seq {seq}: done", flush=True)
    markdown = (
        f"model={model} shape, {layers} layers, micro batch 1, "
        f"gradient checkpointing, ZeRO-3; {steps} measured steps after {warmup}; {env['device']}, {env['date']}\n\n"
        + table(results)
    )
    print(markdown, flush=True)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "bench_train.json").write_text(json.dumps({**env, "results": results}, indent=2))
        (args.output / "bench_train.md").write_text(markdown + "\n")
    return 0 if all("failed" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
