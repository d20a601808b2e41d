"""A resumed run's settings against its checkpoint's: apply what can be applied, refuse the rest.

Every checkpoint records the settings of the run that wrote it (``settings.json``: the model,
its architecture as built, the strategy, the data and the trainer, precision resolved). A resume
compares them with its own, field by field:

- `APPLIED` fields take the new value from the resumed step on, exactly, and each change is
  logged: the length of the run (``trainer.steps``, at least the checkpoint's step), the global
  and micro batch (the sample order does not depend on them, `dprope.data.sampler`), the
  optimizer's hyperparameters (`apply_optimizer_settings` writes them into the restored
  optimizer, whose state dict brought back the old ones), gradient clipping, checkpointing and
  logging periods, kernels and other ways of computing the same step, and where data caches live;
- any other difference is refused in one line naming the field and both values: the model (a
  model of another size gets its own line), the strategy and its options, the data and its
  sequence length, the seed, the warmup, precision, ZeRO stage, attention mode, offload and
  sequence parallelism. ``trainer.resume=never`` or a new ``trainer.output_dir`` starts over.

A field one side lacks (a checkpoint of an earlier version, a field added since) is not compared;
a checkpoint without ``settings.json`` is resumed with a warning that nothing was compared
(its model's parameter shapes are still checked, `dprope.train.checkpoint.check_shapes`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from dprope.config import ConfigError

log = logging.getLogger(__name__)

SETTINGS = "settings.json"
ARCHITECTURE = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)
APPLIED = frozenset(
    {
        "model.name",
        "data.name",
        "data.eval_splits",
        "data.batch_size",
        "data.num_proc",
        "data.cache_dir",
        "data.cache_path",
        "data.steady_memory",
        "trainer.steps",
        "trainer.global_batch_size",
        "trainer.micro_batch_size",
        "trainer.lr",
        "trainer.betas",
        "trainer.eps",
        "trainer.weight_decay",
        "trainer.grad_clip",
        "trainer.save_every",
        "trainer.keep_last",
        "trainer.log_every",
        "trainer.export",
        "trainer.dist_timeout_minutes",
        "trainer.peak_tflops",
        "trainer.attn_implementation",
        "trainer.rope_precision",
        "trainer.gradient_checkpointing",
        "trainer.kernels",
        "trainer.grad_accum_dtype",
        "trainer.tiled_compute",
        "trainer.tiled_shards",
        "trainer.offload_activations",
    }
)
WHERE = frozenset({"trainer.resume", "trainer.output_dir"})  # where a run is, not what it does


def architecture(hf_config: Any) -> dict[str, Any]:
    return {name: getattr(hf_config, name, None) for name in ARCHITECTURE}


def run_settings(run: Any, plan: Any) -> dict[str, Any]:
    """The settings a checkpoint records: `RunConfig` ``run`` as planned (``plan``)."""
    model = {**dataclasses.asdict(run.model), "architecture": architecture(plan.hf_config)}
    trainer = {**dataclasses.asdict(run.trainer), "precision": plan.precision}
    settings = {"model": model, "rope": dataclasses.asdict(run.rope), "data": dataclasses.asdict(run.data)}
    settings["trainer"] = trainer
    return json.loads(json.dumps(settings, default=str))  # as it reads back from the file


def read_settings(checkpoint_dir: Path) -> dict[str, Any] | None:
    path = checkpoint_dir / SETTINGS
    return json.loads(path.read_text()) if path.is_file() else None


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "data.paths":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def compare(
    saved: dict[str, Any] | None, current: dict[str, Any], checkpoint_dir: Path, step: int
) -> list[str]:
    """The applied changes (``'<field> <old> -> <new>'``); a `ConfigError` on the first change
    that cannot be applied. ``step``: the checkpoint's."""
    if saved is None:
        log.warning(
            "checkpoint %s records no settings (written by an earlier version): the run's settings "
            "are not compared with it",
            checkpoint_dir,
        )
        return []
    old, new = _flatten(saved), _flatten(current)
    start_over = "or start over (trainer.resume=never, or a new trainer.output_dir)"
    size = [
        f"model.architecture.{k}"
        for k in ARCHITECTURE
        if old.get(f"model.architecture.{k}") != new.get(f"model.architecture.{k}")
    ]
    if any(f"model.architecture.{k}" in old for k in ARCHITECTURE) and size:
        there = ", ".join(f"{k.rsplit('.', 1)[1]} {old.get(k)}" for k in size)
        here = ", ".join(f"{k.rsplit('.', 1)[1]} {new.get(k)}" for k in size)
        raise ConfigError(
            "model",
            f"the checkpoint {checkpoint_dir} holds a model of another size ({there}; this run builds "
            f"{here}): resume with the checkpoint's model, {start_over}",
        )
    applied = []
    for name, value in new.items():
        if name not in old or old[name] == value or name in WHERE:
            continue
        if name == "data.shuffle_buffer" and not new.get("data.streaming"):
            continue  # read by streams only
        if name not in APPLIED:
            raise ConfigError(
                name,
                f"the checkpoint {checkpoint_dir} was trained with {old[name]!r}, this run has {value!r}: "
                f"resume with the checkpoint's value, {start_over}",
            )
        applied.append(f"{name} {old[name]!r} -> {value!r}")
    steps = new.get("trainer.steps")
    if steps is not None and steps < step:
        raise ConfigError(
            "trainer.steps",
            f"{steps} is below the step of the checkpoint {checkpoint_dir} ({step}): raise it, {start_over}",
        )
    return applied


def apply_optimizer_settings(engine: Any, trainer: Any) -> None:
    """Write this run's optimizer hyperparameters into the optimizer a checkpoint restored (its
    state dict brings back the saved lr, betas, eps and weight decay). The lr is the scheduler's
    for the restored step under this run's settings (its warmup) or the constant lr; with
    unchanged settings every value is what was restored."""
    scheduler = getattr(engine, "lr_scheduler", None)
    groups = engine.optimizer.param_groups
    lrs = scheduler.get_lr() if scheduler is not None else [trainer.lr] * len(groups)
    for group, lr in zip(groups, lrs, strict=True):
        group["lr"] = lr
        group["betas"] = tuple(trainer.betas)
        group["eps"] = trainer.eps
        group["weight_decay"] = trainer.weight_decay
