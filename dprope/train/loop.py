"""The fine-tuning loop, as its phases: plan, set up, step, save or stop, finish.

`train` reads as those phases. The plan (`dprope.train.plan`) checks and derives everything that
needs no model, before the process group; `set_up` materialises it (process group, the run
directory's lock, data, engine, resume) into a `Training`, whose methods are the other phases,
each testable alone. The step itself is a `dprope.train.stepper.Stepper`: one host sync per
optimizer step, a single all-reduce of (loss, stop flag, gradient norm).

A resume compares this run's settings with the checkpoint's (`dprope.train.resume_settings`):
what can be applied is applied from the resumed step on and logged (a longer run, another
global batch, another lr, ...), anything else is a one-line error before the model loads.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dprope.data import PackedStream, ResumableSampler, build_train_dataset, collate_packed
from dprope.data.sampler import covering_size
from dprope.data.tokenizer import load_tokenizer
from dprope.rope.summary import strategy_summary
from dprope.storage import NoSpaceError
from dprope.tracking import Tracker
from dprope.train import checkpoint, resume_settings, run_dir
from dprope.train.config import (
    EXIT_LOAD_FAILED,
    EXIT_NON_FINITE,
    EXIT_PREEMPTED,
    EXIT_SAVE_FAILED,
    RunConfig,
)
from dprope.train.engine import Runtime, init_distributed, main_process_first, materialise
from dprope.train.export import export_hf
from dprope.train.long_context import sp_loader
from dprope.train.metrics import MetricsLog, model_flops_per_token, peak_flops, peak_memory_gib
from dprope.train.notes import note
from dprope.train.plan import TrainingPlan, plan_run
from dprope.train.signals import StopRequest
from dprope.train.stepper import RunState, Stepper, StepResult, is_finite

__all__ = ["RunConfig", "StepResult", "Training", "set_up", "train"]

log = logging.getLogger(__name__)

# called on every rank during each save, once its files are written and before the manifest
SaveHook = Callable[[Path, checkpoint.TrainerState], None]


def train_loader(
    dataset,
    seed: int,
    micro_batch_size: int,
    runtime,
    consumed: int,
    collate=collate_packed,
    num_samples: int | None = None,
) -> DataLoader:
    """This rank's micro-batches of the global order, after ``consumed`` global samples, up to
    ``num_samples`` (the run's whole length; the dataset's when None)."""
    if isinstance(dataset, PackedStream):
        stream = dataset.resume(consumed, runtime.rank, runtime.world_size)
        return DataLoader(stream, batch_size=micro_batch_size, collate_fn=collate)
    sampler = ResumableSampler(num_samples or len(dataset), seed, runtime.rank, runtime.world_size, consumed)
    return DataLoader(dataset, batch_size=micro_batch_size, sampler=sampler, collate_fn=collate)


def samples_needed(trainer, state: checkpoint.TrainerState) -> int:
    """The positions of the global order a run draws in all: those consumed before the checkpoint,
    then this run's global batch for each step left (the whole run when starting)."""
    return state.consumed_samples + (trainer.steps - state.step) * trainer.global_batch_size


class StepRecorder:
    """Where each step's record goes: metrics.jsonl (rank 0), the tracker, the progress bar."""

    def __init__(
        self,
        plan: TrainingPlan,
        tracker: Tracker,
        metrics: MetricsLog | None,
        flops_per_token: float,
        is_main: bool,
    ):
        self.plan, self.tracker, self.metrics, self.is_main = plan, tracker, metrics, is_main
        self.flops_per_token = flops_per_token  # PaLM convention (dprope.train.metrics)
        self.peak_flops = peak_flops(plan.trainer.peak_tflops)  # per device; None = MFU not reported

    def record(self, state: RunState, result: StepResult, lr: float, progress: tqdm) -> dict[str, Any]:
        tokens_per_s = self.plan.tokens_per_step / result.elapsed
        record = {
            "step": state.step,
            "loss": result.loss,
            "lr": lr,
            "grad_norm": result.grad_norm,
            "tokens_per_s": tokens_per_s,
            "step_time_s": result.elapsed,
            "peak_memory_gib": peak_memory_gib(reset=True),  # this step's peak
            "consumed_samples": state.trainer_state.consumed_samples,
        }
        if self.peak_flops is not None:
            # achieved FLOP/s over all devices: tokens per second x FLOPs per token
            record["mfu"] = tokens_per_s * self.flops_per_token / (self.plan.world_size * self.peak_flops)
        if self.is_main:
            self.metrics.write(record)
            progress.update(1)
            if state.step % self.plan.trainer.log_every == 0:
                progress.set_postfix(loss=f"{result.loss:.4f}", tok_s=f"{tokens_per_s:.0f}")
                self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "step"}, state.step)
        return record

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.tracker.finish()


@dataclass
class Training:
    """A set-up run: its plan, its engine and stepper, where it stands and where its records go."""

    plan: TrainingPlan
    runtime: Runtime
    engine: Any  # deepspeed.DeepSpeedEngine
    stepper: Stepper
    state: RunState
    recorder: StepRecorder
    tokenizer: Any
    summary: dict[str, Any]  # strategy_summary, logged and exported
    save_hook: SaveHook | None = None
    settings: dict[str, Any] | None = None  # recorded in each checkpoint (resume_settings.run_settings)
    lock: run_dir.RunLock | None = None  # the run directory's, held by rank 0 until `close`

    @property
    def output_dir(self) -> Path:
        return Path(self.plan.trainer.output_dir)

    def step(self, stop: StopRequest | bool = False) -> StepResult:
        return self.stepper.step(stop)

    def record(self, result: StepResult, progress: tqdm) -> dict[str, Any]:
        """Advance the run state and write the step's metrics (rank 0)."""
        self.state.advance(self.plan.trainer.global_batch_size)
        return self.recorder.record(self.state, result, self.engine.get_lr()[0], progress)

    def save(self) -> None:
        trainer, rank = self.plan.trainer, self.runtime.rank
        state = self.state.trainer_state
        checkpoint.save(
            self.engine, self.output_dir, state, rank, trainer.keep_last, self.save_hook, self.settings
        )
        self.state.last_saved = state.step

    def save_or_stop(self, result: StepResult, stop: StopRequest) -> int | None:
        """The periodic save, and the stop on a signal (save, then `EXIT_PREEMPTED`); None = go on."""
        save_every = self.plan.trainer.save_every
        if save_every and self.state.step % save_every == 0:
            self.save()
        if not result.stop_requested:
            return None
        if self.state.last_saved != self.state.step:
            self.save()
        if self.runtime.is_main:
            print(
                f"stopped by {stop.requested or 'a signal'} at step {self.state.step}; checkpoint saved",
                flush=True,
            )
        return EXIT_PREEMPTED

    def report_non_finite(self, result: StepResult) -> int:
        """A non-finite loss or gradient norm: nothing is saved. The one-line error names the
        checkpoint the failed step started from (resuming it fails again) and the last one from
        which training was still finite, if one is kept."""
        if self.runtime.is_main:
            what = "loss" if not is_finite(result.loss) else "gradient norm"
            failed = self.state.step + 1
            print(
                f"error: non-finite {what} at step {failed} (loss {result.loss}, grad norm "
                f"{result.grad_norm}); stopping without saving. {self.finite_checkpoints(failed)}",
                file=sys.stderr,
                flush=True,
            )
        return EXIT_NON_FINITE

    def finite_checkpoints(self, failed: int) -> str:
        """What the kept checkpoints of this run are worth after step ``failed`` went non-finite:
        the one at ``failed - 1`` holds the weights that step started from; one before it is the
        last from which training was still finite."""
        root = checkpoint.checkpoint_root(self.output_dir)
        run_id = self.state.trainer_state.run_id
        steps = {}
        for path in checkpoint.complete_checkpoints(root):
            state = checkpoint.read_state(path)
            if state.run_id == run_id:
                steps[state.step] = path
        text = []
        if failed - 1 in steps:
            text.append(
                f"Checkpoint {steps[failed - 1].name} holds the weights step {failed} started from: "
                "resuming it fails again."
            )
        finite = [step for step in steps if step < failed - 1]
        if finite:
            path = steps[max(finite)]
            text.append(
                f"The last checkpoint from which training was still finite is {path} "
                f"(resume it with trainer.resume={path} and a lower trainer.lr)."
            )
        else:
            text.append(
                "No checkpoint from which training was still finite is kept: start over "
                "(trainer.resume=never) with a lower trainer.lr."
            )
        return " ".join(text)

    def finish(self) -> None:
        """The final checkpoint and the HF export."""
        if self.state.last_saved != self.state.step:
            self.save()
        if self.plan.trainer.export:
            path = export_hf(self.engine, self.tokenizer, self.output_dir, self.runtime.rank, self.summary)
            if self.runtime.is_main:
                print(f"export: {path}", flush=True)

    def close(self) -> None:
        try:
            self.recorder.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def set_up(run: RunConfig, resolved_config: dict[str, Any], save_hook: SaveHook | None = None) -> Training:
    """Plan the run (every check that needs no model), join the process group, lock the run
    directory, build data and engine, resume. ``save_hook``: see `dprope.train.checkpoint.save`
    (``before_manifest``). The lock is released by `Training.close`, or here on an error."""
    plan = plan_run(run)  # every check that needs no model, before any expensive work
    candidates = checkpoint.resume_candidates(run.trainer.resume, Path(run.trainer.output_dir))

    note(f"starting the process group (world size {plan.world_size})")
    runtime = init_distributed(run.trainer.dist_timeout_minutes)
    if runtime.world_size != plan.world_size:  # a launcher that announced no world size
        plan = plan_run(run, runtime.world_size)
    lock = run_dir.lock_run_dir(Path(run.trainer.output_dir), runtime.rank)
    try:
        return _set_up(run, plan, runtime, candidates, resolved_config, save_hook, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _set_up(
    run: RunConfig,
    plan: TrainingPlan,
    runtime: Runtime,
    candidates: list[Path],
    resolved_config: dict[str, Any],
    save_hook: SaveHook | None,
    lock: run_dir.RunLock | None,
) -> Training:
    trainer = run.trainer
    output_dir = Path(trainer.output_dir)
    run_dir.keep_runs_apart(trainer.resume, output_dir, candidates, runtime.rank)
    # verified (a damaged checkpoint falls back to an older one), checked for anything but plain
    # weights and for settings it cannot be resumed with and, saved on another world size,
    # converted to a universal checkpoint; before any model loads
    settings = resume_settings.run_settings(run, plan)

    def accept(path: Path, state: checkpoint.TrainerState) -> None:
        """This run's settings against the checkpoint's: applied changes logged, others refused."""
        changed = resume_settings.compare(resume_settings.read_settings(path), settings, path, state.step)
        if changed and runtime.is_main:
            log.info(
                "resuming %s with changed settings, applied from step %d on: %s",
                path.name,
                state.step + 1,
                "; ".join(changed),
            )

    resume = checkpoint.choose_resume(candidates, runtime.world_size, runtime.rank, accept)
    start = checkpoint.TrainerState(world_size=runtime.world_size)
    if resume is not None:
        start = resume.state
    else:
        start.run_id = run_dir.new_run_id()
    num_samples = samples_needed(trainer, start)
    tokenizer = load_tokenizer(
        run.model.tokenizer_name, field="model.tokenizer" if run.model.tokenizer else "model.pretrained"
    )
    collate = plan.mode.collate(tokenizer.bos_token_id)  # before the model loads
    with main_process_first(runtime):  # rank 0 builds the data cache, the others then read it
        dataset = build_train_dataset(
            run.data,
            tokenizer,
            run.model.tokenizer_name,
            num_samples if run.data.streaming else covering_size(num_samples),
            plan.scaling.target_length,
        )
    if runtime.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(resolved_config, sort_keys=False))
    log.info(
        "attention: %s, kernels: %s, precision: %s, rotation: %s, world size %d",
        plan.attention,
        plan.kernels,
        plan.precision,
        trainer.rope_precision,
        runtime.world_size,
    )
    weights = f"weights of {run.model.pretrained}" if run.model.pretrained else "random init"
    note(f"building the model ({weights}) and the DeepSpeed engine (ZeRO-{trainer.zero_stage})")
    built = materialise(plan, runtime, load_universal=resume is not None and resume.universal)
    engine = built.engine
    checkpoint.guard(engine)  # DeepSpeed's saves name a full disk's file, its loads are weights only

    state = RunState(start)
    if resume is not None:
        loaded = checkpoint.load(engine, resume)
        resume_settings.apply_optimizer_settings(engine, trainer)
        log.info("resumed from %s at step %d", resume.path, loaded.step)
        loaded.world_size = runtime.world_size
        state = RunState(loaded, last_saved=loaded.step)

    summary = strategy_summary(plan.rope, plan.scaling)
    tracker = Tracker(run.logger, output_dir, resolved_config, enabled=runtime.is_main)
    metrics = MetricsLog(output_dir / "metrics.jsonl", state.step) if runtime.is_main else None
    if runtime.is_main:
        (output_dir / "rope.json").write_text(json.dumps(summary, indent=2))
        (output_dir / "deepspeed_config.json").write_text(json.dumps(built.ds_config, indent=2))
        tracker.summary(
            {"rope/disturbance": summary["disturbance"], "rope/scaling_factors": summary["scaling_factors"]}
        )
        print(
            f"dprope: {run.rope.name} s={run.rope.factor:g} -> {plan.scaling.target_length} tokens, "
            f"disturbance {summary['disturbance']:.3f}, attention {plan.attention}, "
            f"kernels {plan.kernels}, {plan.precision}, rotation {trainer.rope_precision}, {plan.layout()}",
            flush=True,
        )

    per_token = model_flops_per_token(engine.module, plan.scaling.head_dim, plan.seq_len)
    loader = train_loader(
        dataset,
        run.data.seed,
        trainer.micro_batch_size,
        runtime,
        state.trainer_state.consumed_samples,
        collate,
        num_samples,
    )
    # with SP, each group's ranks take turns supplying the sequence they all work on; a step's
    # accumulation is a multiple of the SP size, so resuming at consumed_samples stays exact
    loader = sp_loader(loader, runtime.device, built.parts.sp_group, trainer.sequence_parallel_size)
    batches = iter(loader)  # draws from the torch RNG: before the saved RNG state is put back
    if resume is not None:
        checkpoint.restore_rng(resume.path, runtime.rank)
    return Training(
        plan=plan,
        runtime=runtime,
        engine=engine,
        stepper=Stepper(engine, built.micro_step, batches, plan.accumulation, runtime.device),
        state=state,
        recorder=StepRecorder(plan, tracker, metrics, per_token, runtime.is_main),
        tokenizer=tokenizer,
        summary=summary,
        save_hook=save_hook,
        settings=settings,
        lock=lock,
    )


def train(run: RunConfig, resolved_config: dict[str, Any], save_hook: SaveHook | None = None) -> int:
    """Run (or resume) a fine-tuning job; returns the process exit code. ``save_hook``: called on
    every rank in each save, after its files and before the manifest (`dprope.train.checkpoint.save`)."""
    try:
        training = set_up(run, resolved_config, save_hook)
    except checkpoint.CheckpointLoadError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    stop = StopRequest()
    progress = tqdm(
        total=run.trainer.steps,
        initial=training.state.step,
        disable=not training.runtime.is_main,
        desc="train",
        unit="step",
    )
    try:
        while training.state.step < run.trainer.steps:
            result = training.step(stop)
            if not result.finite:
                progress.close()  # the error goes on a line of its own, not after the bar
                return training.report_non_finite(result)
            training.record(result, progress)
            code = training.save_or_stop(result, stop)
            if code is not None:
                return code
        progress.close()
        training.finish()
        return 0
    except (checkpoint.SaveError, NoSpaceError) as err:  # a full disk: one line, the previous checkpoint kept
        progress.close()
        if training.runtime.is_main:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_SAVE_FAILED
    finally:
        stop.restore()
        progress.close()
        training.close()
