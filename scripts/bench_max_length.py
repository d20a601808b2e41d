"""The longest sequence a LLaMA-7B-shaped model trains one step at, per long-context option.

    python scripts/bench_max_length.py --offload-optimizer               # plain, tiled, tiled+offload on 1 GPU
    python scripts/bench_max_length.py --layers 8                        # the same with 8 of the 32 layers
    python scripts/bench_max_length.py --options sp --sp 8               # Ulysses SP=8 (+ tiling, offload)
    python scripts/bench_max_length.py --smoke                           # tiny model on CPU: the plumbing only

Model states first: ZeRO-3 on one GPU keeps the bf16 weights, the float32 gradients, master
weights and Adam moments of all 6.7B parameters there, 18 bytes each, about 113 GiB (DeepSpeed's
`estimate_zero3_model_states_mem_needs`, printed before the search): more than an 80 GB GPU holds
before any activation, so on one GPU use ``--offload-optimizer`` (ZeRO-Offload: everything but the
bf16 weights on the CPU, about 13 GiB left on the GPU by the same estimate; the CPU step runs in DeepSpeed's CPU Adam,
compiled from C++ on first use) or ``--layers N`` (a model of the 7B shape with N layers).

Options (`dprope.train.long_context`, DeepSpeed ALST): ``plain`` (ZeRO-3, gradient checkpointing,
bf16), ``tiled`` (+ TiledMLP and TiledFusedLogitsLoss), ``tiled+offload`` (+ checkpoint inputs
offloaded to CPU), ``sp`` (all of it with ``trainer.sequence_parallel_size=N`` on N processes).

Each attempt is a fresh child process (under torchrun for ``sp``) that takes the trainer's own
path: it composes the run (``model=llama2_7b`` with random weights, or ``model=tiny`` for
``--smoke``; PI at s = length / L), plans it (`dprope.train.plan`: precision, attention kernel,
Liger, batch arithmetic, model transforms), materialises it and runs a warm-up step and a timed
step of the trainer's `Stepper` on one random sequence per data-parallel replica, then prints one
JSON line. A CUDA out-of-memory error, or a
peak memory above ``--memory-limit-gib``, means "does not fit". The search starts at the longest
length, then bisects on multiples of ``--granule`` (lengths that fit are assumed to form a prefix).

Reported per option: the longest length that fits, its tokens/s (timed step) and MFU (PaLM
FLOPs, `dprope.train.metrics`; GPU only), peak memory, the kernels and attention the plan chose
(``trainer.kernels=auto``: Liger where it runs, which excludes the tiled and SP options), and the
attempts made; the JSON also has the micro-step kind and the model transforms applied.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OPTIONS = ("plain", "tiled", "tiled+offload", "sp")
OOM_EXIT = 3


def longest_fitting(
    fits: Callable[[int], bool], low: int, high: int, granule: int
) -> tuple[int | None, list]:
    """The largest multiple of ``granule`` in [low, high] for which ``fits`` holds, assuming the
    lengths that fit are a prefix; None when even ``low`` does not. Returns it and the attempts."""
    attempts: list[tuple[int, bool]] = []

    def tried(length: int) -> bool:
        ok = fits(length)
        attempts.append((length, ok))
        return ok

    low, high = math.ceil(low / granule), high // granule  # in granules
    if low > high:
        raise ValueError("no multiple of the granule between the lengths")
    if tried(high * granule):
        return high * granule, attempts
    if not tried(low * granule):
        return None, attempts
    while high - low > 1:  # low fits, high does not
        middle = (low + high) // 2
        if tried(middle * granule):
            low = middle
        else:
            high = middle
    return low * granule, attempts


def compose_run(
    option: str,
    length: int,
    smoke: bool,
    world_size: int,
    layers: int | None = None,
    offload_optimizer: bool = False,
):
    """The training run an attempt plans: the model preset with random weights (``layers``
    decoder layers, else the preset's), PI from L up to ``length``, ZeRO-3 with gradient
    checkpointing (the optimizer on the CPU with ``offload_optimizer``), one sequence per rank and
    step (SP turns x replicas), and the option's long-context settings."""
    from dprope.cli import compose_config
    from dprope.train.config import RunConfig

    sequence_parallel = world_size if option == "sp" else 1
    model = ["model=tiny"] if smoke else ["model=llama2_7b", "model.pretrained=null", "model.tokenizer=byte"]
    if layers is not None:
        model.append(f"model.num_hidden_layers={layers}")
    cfg = compose_config(
        "train",
        [
            *model,
            "rope=pi",
            f"data.max_length={length}",
            "trainer=zero3",
            "trainer.output_dir=unused",
            f"trainer.global_batch_size={world_size}",
            "trainer.micro_batch_size=1",
            "trainer.gradient_checkpointing=true",
            f"trainer.sequence_parallel_size={sequence_parallel}",
            f"trainer.tiled_compute={option != 'plain'}",
            f"trainer.offload_activations={option in ('tiled+offload', 'sp')}",
            f"trainer.offload_optimizer={offload_optimizer}",
            "trainer.export=false",
            "trainer.save_every=0",
        ],
    )
    cfg.rope.factor = max(1.0, length / cfg.model.original_max_position_embeddings)
    return RunConfig.from_config(cfg)


def model_states_gib(run, world_size: int) -> dict:
    """What ZeRO-3's model states take per rank (GiB), by DeepSpeed's own estimate
    (`estimate_zero3_model_states_mem_needs`: weights, gradients, fp32 master weights and Adam
    moments, 18 bytes per parameter over the GPUs, or 2 on the GPU with the optimizer offloaded),
    counted on a meta-device model of the run's shape."""
    import torch

    from dprope.accelerator import name_deepspeed_accelerator

    name_deepspeed_accelerator()
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from transformers import AutoModelForCausalLM

    from dprope.train.plan import plan_training

    hf_config = plan_training(run.model, run.rope, run.trainer, run.data.max_length, world_size).hf_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        total,
        largest,
        num_gpus_per_node=world_size,
        cpu_offload=run.trainer.offload_optimizer,
        cpu_offload_params=False,
    )
    return {"parameters": total, "gpu_gib": gpu / 2**30, "cpu_gib": cpu / 2**30}


def attempt(
    option: str,
    length: int,
    smoke: bool,
    memory_limit_gib: float | None,
    layers: int | None = None,
    offload_optimizer: bool = False,
) -> dict:
    """One warm-up and one timed training step at ``length`` in this process (every rank)."""
    import torch

    from dprope.train.engine import expected_world_size, init_distributed, materialise
    from dprope.train.long_context import sp_loader
    from dprope.train.metrics import model_flops_per_token, peak_flops, peak_memory_gib
    from dprope.train.plan import plan_run
    from dprope.train.stepper import Stepper

    world_size = expected_world_size()
    run = compose_run(option, length, smoke, world_size, layers, offload_optimizer)
    plan = plan_run(run, world_size)  # the trainer's checks and choices: kernels, attention, transforms
    runtime = init_distributed()
    sequence_parallel = run.trainer.sequence_parallel_size
    data_parallel = runtime.world_size // sequence_parallel
    built = materialise(plan, runtime)
    generator = torch.Generator().manual_seed(runtime.rank // sequence_parallel)
    sequences = [
        {
            "input_ids": ids[None],
            "labels": ids[None].clone(),
            "position_ids": torch.arange(length)[None],
        }
        for ids in torch.randint(3, run.model.vocab_size, (2, length), generator=generator)
    ]
    # a step is one turn per SP rank: each rank's loader supplies one sequence per step
    loader = torch.utils.data.DataLoader(sequences, batch_size=None)
    batches = iter(sp_loader(loader, runtime.device, built.parts.sp_group, sequence_parallel))
    stepper = Stepper(built.engine, built.micro_step, batches, plan.accumulation, runtime.device)
    cuda = torch.cuda.is_available()
    elapsed = None
    try:
        for step in range(2):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            stepper.step()
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start if step == 1 else None
    except torch.cuda.OutOfMemoryError:
        return {"ok": False, "reason": "out of memory"}
    peak = peak_memory_gib()
    if memory_limit_gib is not None and peak > memory_limit_gib:
        return {"ok": False, "reason": f"peak {peak:.2f} GiB over the limit", "peak_memory_gib": peak}
    tokens = length * data_parallel * sequence_parallel  # one sequence per replica per SP turn
    per_token = model_flops_per_token(built.engine.module, plan.scaling.head_dim, length)
    tokens_per_s = tokens / elapsed
    device_peak = peak_flops(None)
    return {
        "ok": True,
        "tokens_per_s": tokens_per_s,
        "mfu": None if device_peak is None else tokens_per_s * per_token / (runtime.world_size * device_peak),
        "peak_memory_gib": peak,
        "world_size": runtime.world_size,
        "attention": plan.attention,
        "kernels": plan.kernels,
        "micro_step": plan.micro_step.__name__,
        "transforms": built.applied,
    }


def run_attempt(option: str, length: int, args) -> dict:
    """`attempt` in a fresh child process (torchrun with --sp processes for ``sp``)."""
    launcher = [sys.executable]
    if option == "sp":
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.sp}",
        ]
    command = [*launcher, __file__, "--child", option, str(length)]
    if args.smoke:
        command.append("--smoke")
    if args.memory_limit_gib is not None:
        command += ["--memory-limit-gib", str(args.memory_limit_gib)]
    if args.layers is not None:
        command += ["--layers", str(args.layers)]
    if args.offload_optimizer:
        command.append("--offload-optimizer")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if args.smoke:
        from dprope.accelerator import cpu_only_environment

        env = cpu_only_environment(env)
        env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[0])
    if "out of memory" in (done.stdout + done.stderr).lower():
        return {"ok": False, "reason": "out of memory"}
    raise SystemExit(f"error: attempt {option} at {length} failed:\n{done.stderr[-3000:]}")


def describe_model_states(states: dict, world_size: int, offload_optimizer: bool) -> str:
    """One line: what the model states take per GPU, and whether the GPU can hold them."""
    where = "optimizer offloaded to the CPU" if offload_optimizer else "optimizer on the GPU"
    line = (
        f"model states ({states['parameters']:,} parameters, ZeRO-3 on {world_size} GPU(s), "
        f"{where}; DeepSpeed's estimate): {states['gpu_gib']:.1f} GiB per GPU, "
        f"{states['cpu_gib']:.1f} GiB of CPU memory"
    )
    import torch

    from dprope import accelerator

    if accelerator.on_cuda():
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        line += f"; the GPU has {total:.1f} GiB"
        if states["gpu_gib"] >= total:
            line += ": no length fits, use --offload-optimizer or --layers"
    return line


def search(option: str, args) -> dict:
    results: dict[int, dict] = {}

    def fits(length: int) -> bool:
        results[length] = run_attempt(option, length, args)
        print(f"  {option:<14} {length:>9}  {'fits' if results[length]['ok'] else results[length]['reason']}")
        return results[length]["ok"]

    best, attempts = longest_fitting(fits, args.min_length, args.max_length, args.granule)
    summary = {"option": option, "max_length": best, "attempts": attempts}
    if best is not None:
        summary.update({k: v for k, v in results[best].items() if k != "ok"})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--options", nargs="+", choices=OPTIONS, default=["plain", "tiled", "tiled+offload"])
    parser.add_argument("--sp", type=int, default=8, help="processes (= SP size) of the sp option")
    parser.add_argument("--min-length", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=524288)
    parser.add_argument("--granule", type=int, default=4096, help="lengths tried are multiples of this")
    parser.add_argument(
        "--memory-limit-gib", type=float, default=None, help="peak memory above this = no fit"
    )
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers of the 7B shape (default: its 32)"
    )
    parser.add_argument(
        "--offload-optimizer",
        action="store_true",
        help="ZeRO-Offload: optimizer states, fp32 weights and the step on the CPU",
    )
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU, lengths 64..256")
    parser.add_argument("--child", nargs=2, metavar=("OPTION", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = attempt(
            args.child[0],
            int(args.child[1]),
            args.smoke,
            args.memory_limit_gib,
            args.layers,
            args.offload_optimizer,
        )
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result), flush=True)
        return
    if args.smoke:
        args.min_length, args.max_length, args.granule = 64, 256, 64
        args.sp = 2
        from dprope.accelerator import cpu_only_environment

        os.environ.update(cpu_only_environment())
    states = {}
    for world_size in sorted({args.sp if option == "sp" else 1 for option in args.options}):
        run = compose_run(
            "plain", args.min_length, args.smoke, world_size, args.layers, args.offload_optimizer
        )
        states[world_size] = model_states_gib(run, world_size)
        print(describe_model_states(states[world_size], world_size, args.offload_optimizer), flush=True)
    summaries = [search(option, args) for option in args.options]
    for summary in summaries:
        summary["model_states"] = states[args.sp if summary["option"] == "sp" else 1]
    print(
        f"\n{'option':<14} {'max length':>10} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9}  kernels, attention"
    )
    for s in summaries:
        mfu = "-" if s.get("mfu") is None else f"{100 * s['mfu']:.1f}%"
        tokens = "-" if s.get("tokens_per_s") is None else f"{s['tokens_per_s']:.0f}"
        peak = "-" if s.get("peak_memory_gib") is None else f"{s['peak_memory_gib']:.1f}"
        chosen = f"{s['kernels']}, {s['attention']}" if "kernels" in s else "-"
        print(f"{s['option']:<14} {str(s['max_length']):>10} {tokens:>10} {mfu:>6} {peak:>9}  {chosen}")
    if args.output is not None:
        args.output.write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
