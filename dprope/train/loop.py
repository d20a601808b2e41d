"""The fine-tuning loop: data, engine, checkpoints, signals, metrics, export.

One host sync per optimizer step: a single all-reduce of (loss, stop flag), which the console,
metrics.jsonl and the non-finite guard all read.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dprope.data import DataConfig, PackedStream, ResumableSampler, build_train_dataset, collate_packed
from dprope.data.tokenizer import load_tokenizer
from dprope.model import ModelConfig
from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.registry import RopeConfig, rope_parameters
from dprope.rope.strategies import RopeScaling
from dprope.train import checkpoint
from dprope.train.config import EXIT_NON_FINITE, EXIT_PREEMPTED, LoggerConfig, TrainerConfig
from dprope.train.engine import (
    build_engine,
    check_pretrained,
    expected_world_size,
    init_distributed,
    main_process_first,
    model_hf_config,
    resolve_attention,
    resolve_precision,
)
from dprope.train.export import export_hf
from dprope.train.metrics import MetricsLog, flops_per_token, peak_flops, peak_memory_gib
from dprope.train.signals import StopRequest
from dprope.train.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Everything a training run is made of, typed."""

    model: ModelConfig
    rope: RopeConfig
    data: DataConfig
    trainer: TrainerConfig
    logger: LoggerConfig

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> RunConfig:
        """The typed run from the resolved Hydra config as plain containers; errors name the field."""
        from dprope.config import from_mapping
        from dprope.data import data_config
        from dprope.rope.registry import rope_config

        return cls(
            model=from_mapping(ModelConfig, plain["model"], prefix="model"),
            rope=rope_config(plain["rope"]),
            data=data_config(plain["data"]),
            trainer=from_mapping(TrainerConfig, plain["trainer"], prefix="trainer"),
            logger=from_mapping(LoggerConfig, plain["logger"], prefix="logger"),
        )


def strategy_summary(rope: RopeConfig, scaling: RopeScaling, num_intervals: int = 360) -> dict[str, Any]:
    """The strategy's per-pair factors and total disturbance, as logged and exported."""
    analyzer = DisturbanceAnalyzer(
        scaling.head_dim,
        scaling.rope_theta,
        scaling.original_length,
        getattr(rope, "num_intervals", num_intervals),
    )
    return {
        "strategy": rope.name,
        "factor": rope.factor,
        "target_length": scaling.target_length,
        "disturbance": analyzer.total(analyzer.per_pair(scaling)),
        "scaling_factors": scaling.scaling_factors.tolist(),
        "attention_factor": scaling.attention_factor,
        "rope_parameters": rope_parameters(rope, scaling),
        "config": asdict(rope),
    }


def train_loader(dataset, seed: int, micro_batch_size: int, runtime, consumed: int) -> DataLoader:
    """This rank's micro-batches of the global order, after ``consumed`` global samples."""
    if isinstance(dataset, PackedStream):
        stream = dataset.resume(consumed, runtime.rank, runtime.world_size)
        return DataLoader(stream, batch_size=micro_batch_size, collate_fn=collate_packed)
    sampler = ResumableSampler(len(dataset), seed, runtime.rank, runtime.world_size, consumed)
    return DataLoader(dataset, batch_size=micro_batch_size, sampler=sampler, collate_fn=collate_packed)


def _non_embedding_params(model: torch.nn.Module) -> int:
    embedding = model.get_input_embeddings()
    skip = {id(p) for p in embedding.parameters()}
    # ZeRO-3 partitions parameters: ds_numel is the full size
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if id(p) not in skip)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def train(run: RunConfig, resolved_config: dict[str, Any]) -> int:
    """Run (or resume) a fine-tuning job; returns the process exit code."""
    trainer = run.trainer
    output_dir = Path(trainer.output_dir)
    # every check that needs no model, before any expensive work
    precision = resolve_precision(trainer)
    attention = resolve_attention(trainer)
    check_pretrained(run.model)
    trainer.accumulation_steps(expected_world_size())
    hf_config, scaling = model_hf_config(run.model, run.rope)
    resume_from = checkpoint.resolve_resume(trainer.resume, output_dir)

    runtime = init_distributed()
    accumulation = trainer.accumulation_steps(runtime.world_size)
    tokenizer = load_tokenizer(
        run.model.tokenizer_name, field="model.tokenizer" if run.model.tokenizer else "model.pretrained"
    )
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
    log.info("attention: %s, precision: %s, world size %d", attention, precision, runtime.world_size)
    engine, ds_config = build_engine(run.model, hf_config, scaling, trainer, runtime, precision, attention)

    state = checkpoint.TrainerState(world_size=runtime.world_size)
    if resume_from is not None:
        state = checkpoint.load(engine, resume_from, runtime.rank)
        log.info("resumed from %s at step %d", resume_from, state.step)
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
            f"disturbance {summary['disturbance']:.3f}, attention {attention}, {precision}, "
            f"world {runtime.world_size} x micro {trainer.micro_batch_size} x accumulation {accumulation}",
            flush=True,
        )

    batches = iter(
        train_loader(dataset, run.data.seed, trainer.micro_batch_size, runtime, state.consumed_samples)
    )
    seq_len = run.data.max_length
    hf = engine.module.config
    step_flops = trainer.global_batch_size * flops_per_token(
        _non_embedding_params(engine.module),
        hf.num_hidden_layers,
        hf.num_attention_heads,
        scaling.head_dim,
        seq_len,
    )
    peak = peak_flops(trainer.peak_tflops)
    stop = StopRequest()
    progress = tqdm(
        total=trainer.steps, initial=state.step, disable=not runtime.is_main, desc="train", unit="step"
    )
    last_saved = state.step if resume_from is not None else -1
    exit_code = 0
    try:
        while state.step < trainer.steps:
            start = time.perf_counter()
            loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float32)
            for _ in range(accumulation):
                batch = next(batches)
                outputs = engine(
                    input_ids=batch["input_ids"].to(runtime.device),
                    labels=batch["labels"].to(runtime.device),
                    position_ids=batch["position_ids"].to(runtime.device),
                )
                engine.backward(outputs.loss)
                engine.step()
                loss_sum += outputs.loss.detach().float()
            shared = torch.stack([loss_sum, torch.tensor(float(bool(stop)), device=runtime.device)])
            if dist.is_initialized():
                dist.all_reduce(shared)
            loss = shared[0].item() / (accumulation * runtime.world_size)
            stop_requested = shared[1].item() > 0
            grad_norm = engine.get_global_grad_norm()
            grad_norm = float(grad_norm) if grad_norm is not None else None
            if not (_finite(loss) and _finite(grad_norm)):
                if runtime.is_main:
                    print(
                        f"error: non-finite {'loss' if not _finite(loss) else 'gradient norm'} at step "
                        f"{state.step + 1} (loss {loss}, grad norm {grad_norm}); stopping without saving, "
                        f"the last checkpoint is intact",
                        file=sys.stderr,
                        flush=True,
                    )
                exit_code = EXIT_NON_FINITE
                break
            state.step += 1
            state.consumed_samples += trainer.global_batch_size
            elapsed = time.perf_counter() - start
            tokens_per_s = trainer.global_batch_size * seq_len / elapsed
            record = {
                "step": state.step,
                "loss": loss,
                "lr": engine.get_lr()[0],
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "step_time_s": elapsed,
                "peak_memory_gib": peak_memory_gib(),
                "consumed_samples": state.consumed_samples,
            }
            if peak is not None:
                record["mfu"] = step_flops / elapsed / (runtime.world_size * peak)
            if runtime.is_main:
                metrics.write(record)
                progress.update(1)
                if state.step % trainer.log_every == 0:
                    progress.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:.0f}")
                    tracker.log({f"train/{k}": v for k, v in record.items() if k != "step"}, state.step)
            if trainer.save_every and state.step % trainer.save_every == 0:
                checkpoint.save(engine, output_dir, state, runtime.rank, trainer.keep_last)
                last_saved = state.step
            if stop_requested:
                if last_saved != state.step:
                    checkpoint.save(engine, output_dir, state, runtime.rank, trainer.keep_last)
                if runtime.is_main:
                    print(
                        f"stopped by {stop.requested or 'a signal'} at step {state.step}; checkpoint saved",
                        flush=True,
                    )
                exit_code = EXIT_PREEMPTED
                break
        else:
            if last_saved != state.step:
                checkpoint.save(engine, output_dir, state, runtime.rank, trainer.keep_last)
            if trainer.export:
                path = export_hf(engine, tokenizer, output_dir, runtime.rank, summary)
                if runtime.is_main:
                    print(f"export: {path}", flush=True)
    finally:
        stop.restore()
        progress.close()
        if metrics is not None:
            metrics.close()
        tracker.finish()
    return exit_code
