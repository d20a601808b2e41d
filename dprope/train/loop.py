"""The fine-tuning loop, as its phases: set up, step, save or stop, finish.

`train` reads as those phases; each is a function of a `Job` (everything the set-up built) so it
can be tested alone. One host sync per optimizer step: a single all-reduce of (loss, stop flag),
which the console, metrics.jsonl and the non-finite guard all read.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dprope.config import ConfigError
from dprope.data import PackedStream, ResumableSampler, build_train_dataset, collate_packed
from dprope.data.segments import collate_documents
from dprope.data.tokenizer import load_tokenizer
from dprope.rope.strategies import RopeScaling
from dprope.rope.summary import strategy_summary
from dprope.tracking import Tracker
from dprope.train import checkpoint
from dprope.train.attention import kernel_description, model_inputs
from dprope.train.config import EXIT_NON_FINITE, EXIT_PREEMPTED, RunConfig
from dprope.train.engine import (
    Runtime,
    build_engine,
    check_grad_accum_dtype,
    check_pretrained,
    expected_world_size,
    init_distributed,
    main_process_first,
    model_hf_config,
    resolve_attention,
    resolve_precision,
)
from dprope.train.export import export_hf
from dprope.train.liger import resolve_kernels
from dprope.train.long_context import LongContext, check_long_context, forward_backward, sp_loader
from dprope.train.metrics import MetricsLog, model_flops_per_token, peak_flops, peak_memory_gib
from dprope.train.signals import StopRequest

__all__ = ["Job", "RunConfig", "StepResult", "set_up", "train", "train_step"]

log = logging.getLogger(__name__)


def train_loader(
    dataset, seed: int, micro_batch_size: int, runtime, consumed: int, collate=collate_packed
) -> DataLoader:
    """This rank's micro-batches of the global order, after ``consumed`` global samples."""
    if isinstance(dataset, PackedStream):
        stream = dataset.resume(consumed, runtime.rank, runtime.world_size)
        return DataLoader(stream, batch_size=micro_batch_size, collate_fn=collate)
    sampler = ResumableSampler(len(dataset), seed, runtime.rank, runtime.world_size, consumed)
    return DataLoader(dataset, batch_size=micro_batch_size, sampler=sampler, collate_fn=collate)


def batch_collate(mode: str, tokenizer):
    """The collate function of an attention mode; document and anchor need the tokenizer's BOS."""
    if mode == "causal":
        return collate_packed
    if tokenizer.bos_token_id is None:
        raise ConfigError("model.tokenizer", f"trainer.attention={mode} needs a tokenizer with a BOS token")
    return functools.partial(collate_documents, mode=mode, bos_id=tokenizer.bos_token_id)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


@dataclass
class Job:
    """A set-up run: what the step, save/stop and finish phases read and update."""

    run: RunConfig
    runtime: Runtime
    engine: Any  # deepspeed.DeepSpeedEngine
    tokenizer: Any
    attention: str  # the attention implementation transformers runs (engine.resolve_attention)
    activation_dtype: torch.dtype
    scaling: RopeScaling
    summary: dict[str, Any]  # strategy_summary, logged and exported
    state: checkpoint.TrainerState
    accumulation: int  # micro-batches per optimizer step on each rank
    tokens_per_step: int  # global batch x sequence length
    flops_per_token: float  # PaLM convention (dprope.train.metrics)
    peak_flops: float | None  # per device; None = MFU not reported
    tracker: Tracker
    metrics: MetricsLog | None  # rank 0 only
    batches: Any  # iterator over this rank's micro-batches
    last_saved: int  # step of the newest checkpoint this run wrote or resumed from (-1: none)
    long_context: LongContext  # sequence parallelism and tiling (DeepSpeed ALST)

    def inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A collated micro-batch as the forward's keyword arguments on this rank's device."""
        return model_inputs(batch, self.attention, self.runtime.device, self.activation_dtype)

    @property
    def output_dir(self) -> Path:
        return Path(self.run.trainer.output_dir)


@dataclass
class StepResult:
    loss: float  # mean over the global batch
    grad_norm: float | None
    stop_requested: bool  # a rank got SIGTERM/SIGUSR1
    elapsed: float  # seconds

    @property
    def finite(self) -> bool:
        return _finite(self.loss) and _finite(self.grad_norm)


def set_up(run: RunConfig, resolved_config: dict[str, Any]) -> Job:
    """Check what needs no model, join the process group, build data and engine, resume."""
    trainer = run.trainer
    output_dir = Path(trainer.output_dir)
    # every check that needs no model, before any expensive work
    precision = resolve_precision(trainer)
    attention = resolve_attention(trainer)
    check_pretrained(run.model)
    trainer.accumulation_steps(expected_world_size())
    check_grad_accum_dtype(trainer, precision)
    hf_config, scaling = model_hf_config(run.model, run.rope)
    long_context = trainer.sequence_parallel_size > 1 or trainer.tiled_compute
    kernels = resolve_kernels(trainer.kernels, hf_config.model_type, long_context)
    check_long_context(trainer, hf_config, run.data.max_length, attention)
    candidates = checkpoint.resume_candidates(trainer.resume, output_dir)

    runtime = init_distributed(trainer.dist_timeout_minutes)
    # verified (a damaged checkpoint falls back to an older one) and, saved on another world
    # size, converted to a universal checkpoint; before any model loads
    resume = checkpoint.choose_resume(candidates, runtime.world_size, runtime.rank)
    accumulation = trainer.accumulation_steps(runtime.world_size)
    tokenizer = load_tokenizer(
        run.model.tokenizer_name, field="model.tokenizer" if run.model.tokenizer else "model.pretrained"
    )
    collate = batch_collate(trainer.attention, tokenizer)  # before the model loads
    with main_process_first(runtime):  # rank 0 builds the data cache, the others then read it
        dataset = build_train_dataset(
            run.data,
            tokenizer,
            run.model.tokenizer_name,
            trainer.steps * trainer.global_batch_size,
            scaling.target_length,
        )
    if runtime.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(resolved_config, sort_keys=False))
    log.info(
        "attention: %s, kernels: %s, precision: %s, rotation: %s, world size %d",
        kernel_description(trainer.attention, attention),
        kernels,
        precision,
        trainer.rope_precision,
        runtime.world_size,
    )
    plan = LongContext.from_trainer(trainer)
    engine, ds_config = build_engine(
        run.model,
        hf_config,
        scaling,
        trainer,
        runtime,
        precision,
        attention,
        kernels,
        plan=plan,
        load_universal=resume is not None and resume.universal,
    )

    state = checkpoint.TrainerState(world_size=runtime.world_size)
    if resume is not None:
        state = checkpoint.load(engine, resume)
        log.info("resumed from %s at step %d", resume.path, state.step)
        state.world_size = runtime.world_size

    summary = strategy_summary(run.rope, scaling)
    tracker = Tracker(run.logger, output_dir, resolved_config, enabled=runtime.is_main)
    metrics = MetricsLog(output_dir / "metrics.jsonl", state.step) if runtime.is_main else None
    if runtime.is_main:
        (output_dir / "rope.json").write_text(json.dumps(summary, indent=2))
        (output_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
        tracker.summary(
            {"rope/disturbance": summary["disturbance"], "rope/scaling_factors": summary["scaling_factors"]}
        )
        print(
            f"dprope: {run.rope.name} s={run.rope.factor:g} -> {scaling.target_length} tokens, "
            f"disturbance {summary['disturbance']:.3f}, attention {kernel_description(trainer.attention, attention)}, "
            f"kernels {kernels}, {precision}, rotation {trainer.rope_precision}, "
            f"world {runtime.world_size} x micro {trainer.micro_batch_size} x accumulation {accumulation}"
            + (
                f" / sequence parallel {plan.sequence_parallel_size}"
                if plan.sequence_parallel_size > 1
                else ""
            ),
            flush=True,
        )

    seq_len = run.data.max_length
    per_token = model_flops_per_token(engine.module, scaling.head_dim, seq_len)
    loader = train_loader(
        dataset, run.data.seed, trainer.micro_batch_size, runtime, state.consumed_samples, collate
    )
    # with SP, each group's ranks take turns supplying the sequence they all work on; a step's
    # accumulation is a multiple of the SP size, so resuming at consumed_samples stays exact
    loader = sp_loader(loader, runtime, plan)
    batches = iter(loader)  # draws from the torch RNG: before the saved RNG state is put back
    if resume is not None:
        checkpoint.restore_rng(resume.path, runtime.rank)
    return Job(
        run=run,
        runtime=runtime,
        engine=engine,
        tokenizer=tokenizer,
        attention=attention,
        activation_dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
        scaling=scaling,
        summary=summary,
        state=state,
        accumulation=accumulation,
        tokens_per_step=trainer.global_batch_size * seq_len,
        flops_per_token=per_token,
        peak_flops=peak_flops(trainer.peak_tflops),
        tracker=tracker,
        metrics=metrics,
        batches=batches,
        long_context=plan,
        last_saved=state.step if resume is not None else -1,
    )


def train_step(job: Job, stop: StopRequest) -> StepResult:
    """One optimizer step over ``accumulation`` micro-batches; the step's only host sync is the
    final all-reduce of (loss, stop flag)."""
    engine, device = job.engine, job.runtime.device
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    for _ in range(job.accumulation):
        # the outputs (logits) die inside: they must not live into the next micro-step's forward
        loss = forward_backward(engine, next(job.batches), device, job.long_context, job.inputs)
        engine.step()
        loss_sum += loss.float()
    # ZeRO-3 keeps the global gradient norm as a device tensor: read it in the same single sync
    reported = engine.get_global_grad_norm()
    norm = torch.as_tensor(0.0 if reported is None else reported, device=device, dtype=torch.float32)
    flag = torch.tensor(float(bool(stop)), device=device)
    shared = torch.stack([loss_sum, flag, norm.detach().reshape(())])
    if dist.is_initialized():
        dist.all_reduce(shared)
    loss_value, stop_flag, norm_sum = shared.tolist()  # the step's one host sync
    world = job.runtime.world_size if dist.is_initialized() else 1
    return StepResult(
        # every rank holds its SP group's loss: the mean over ranks is the mean over the global batch
        loss=loss_value / (job.accumulation * world),
        grad_norm=None if reported is None else norm_sum / world,  # the same global norm on every rank
        stop_requested=stop_flag > 0,
        elapsed=time.perf_counter() - start,
    )


def record_step(job: Job, result: StepResult, progress: tqdm) -> dict[str, Any]:
    """Advance the trainer state and write the step's metrics (rank 0)."""
    trainer = job.run.trainer
    job.state.step += 1
    job.state.consumed_samples += trainer.global_batch_size
    tokens_per_s = job.tokens_per_step / result.elapsed
    record = {
        "step": job.state.step,
        "loss": result.loss,
        "lr": job.engine.get_lr()[0],
        "grad_norm": result.grad_norm,
        "tokens_per_s": tokens_per_s,
        "step_time_s": result.elapsed,
        "peak_memory_gib": peak_memory_gib(),
        "consumed_samples": job.state.consumed_samples,
    }
    if job.peak_flops is not None:
        # achieved FLOP/s over all devices: tokens per second x FLOPs per token
        record["mfu"] = tokens_per_s * job.flops_per_token / (job.runtime.world_size * job.peak_flops)
    if job.runtime.is_main:
        job.metrics.write(record)
        progress.update(1)
        if job.state.step % trainer.log_every == 0:
            progress.set_postfix(loss=f"{result.loss:.4f}", tok_s=f"{tokens_per_s:.0f}")
            job.tracker.log({f"train/{k}": v for k, v in record.items() if k != "step"}, job.state.step)
    return record


def save(job: Job) -> None:
    trainer = job.run.trainer
    checkpoint.save(job.engine, job.output_dir, job.state, job.runtime.rank, trainer.keep_last)
    job.last_saved = job.state.step


def save_or_stop(job: Job, result: StepResult, stop: StopRequest) -> int | None:
    """The periodic save, and the stop on a signal (save, then `EXIT_PREEMPTED`); None = go on."""
    save_every = job.run.trainer.save_every
    if save_every and job.state.step % save_every == 0:
        save(job)
    if not result.stop_requested:
        return None
    if job.last_saved != job.state.step:
        save(job)
    if job.runtime.is_main:
        print(
            f"stopped by {stop.requested or 'a signal'} at step {job.state.step}; checkpoint saved",
            flush=True,
        )
    return EXIT_PREEMPTED


def report_non_finite(job: Job, result: StepResult) -> int:
    """A non-finite loss or gradient norm: nothing is saved, the last checkpoint stays in charge."""
    if job.runtime.is_main:
        what = "loss" if not _finite(result.loss) else "gradient norm"
        print(
            f"error: non-finite {what} at step {job.state.step + 1} (loss {result.loss}, grad norm "
            f"{result.grad_norm}); stopping without saving, the last checkpoint is intact",
            file=sys.stderr,
            flush=True,
        )
    return EXIT_NON_FINITE


def finish(job: Job) -> None:
    """The final checkpoint and the HF export."""
    if job.last_saved != job.state.step:
        save(job)
    if job.run.trainer.export:
        path = export_hf(job.engine, job.tokenizer, job.output_dir, job.runtime.rank, job.summary)
        if job.runtime.is_main:
            print(f"export: {path}", flush=True)


def train(run: RunConfig, resolved_config: dict[str, Any]) -> int:
    """Run (or resume) a fine-tuning job; returns the process exit code."""
    job = set_up(run, resolved_config)
    stop = StopRequest()
    progress = tqdm(
        total=run.trainer.steps,
        initial=job.state.step,
        disable=not job.runtime.is_main,
        desc="train",
        unit="step",
    )
    try:
        while job.state.step < run.trainer.steps:
            result = train_step(job, stop)
            if not result.finite:
                return report_non_finite(job, result)
            record_step(job, result, progress)
            code = save_or_stop(job, result, stop)
            if code is not None:
                return code
        finish(job)
        return 0
    finally:
        stop.restore()
        progress.close()
        if job.metrics is not None:
            job.metrics.close()
        job.tracker.finish()
