"""The forward and backward of one micro-batch, in three kinds chosen once by the plan.

- `PlainStep`: the model's own mean loss on the attention mode's inputs (varlen segments,
  document masks: `dprope.train.attention`).
- `UlyssesStep`: with sequence parallelism (`dprope.train.long_context`), each rank holds a slice
  of a sequence its SP group shares.
- `TiledLossStep`: with tiled compute, DeepSpeed's `TiledFusedLogitsLoss` computes the logits and
  the loss a tile at a time, with or without sequence parallelism.

The last two pass the tokens, positions and targets themselves, and the attention mode's masks
(`AttentionMode.masks`: the whole window's under sequence parallelism) with them.

Loss of the last two: the SP group's loss is the token-weighted mean over the whole sequence, sum
of the slices' cross-entropy sums / the group's count of labelled tokens (one rank and one slice
without SP). Each rank backpropagates N times its own term, which is what DeepSpeed's recipe (a
differentiable all-gather of the terms, summed on every rank) sends back to it; ZeRO-3 then divides
the gradients by the whole world size and the result is the single-GPU gradient (tested:
`tests/train/test_long_context.py`).

Every kind runs inside DeepSpeed's checkpoint-input offload when ``trainer.offload_activations``
is on. A call returns the micro-batch's loss value, detached, on the device: the step reads it
back once, with the others (`dprope.train.stepper`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from dprope.train.long_context import IGNORE_INDEX, logits_shards, offload_context, shift_labels

if TYPE_CHECKING:
    from dprope.train.plan import TrainingPlan
    from dprope.train.transforms import ModelParts

Batch = dict[str, Any]


class MicroStep:
    """Forward and backward of one micro-batch on ``engine``."""

    def __init__(self, engine, device: torch.device, offload: bool = False):
        self.engine, self.device, self.offload = engine, device, offload

    @classmethod
    def build(cls, engine, device: torch.device, plan: TrainingPlan, parts: ModelParts) -> MicroStep:
        """This kind for a materialised plan (``parts``: what its model transforms handed on)."""
        raise NotImplementedError

    def __call__(self, batch: Batch) -> torch.Tensor:
        # the outputs (logits) die inside run: they must not live into the next micro-step's forward
        with offload_context(self.offload):
            share = self.run(batch)
        return self.group_loss(share)

    def run(self, batch: Batch) -> torch.Tensor:
        """Forward and backward; returns this rank's share of the loss (detached)."""
        raise NotImplementedError

    def group_loss(self, share: torch.Tensor) -> torch.Tensor:
        """The loss of the sequences this rank works on, from its share of it."""
        return share


class PlainStep(MicroStep):
    """The model's own mean loss; ``inputs`` turns a collated batch into the forward's arguments."""

    def __init__(self, engine, device, inputs: Callable[[Batch], dict[str, Any]], offload: bool = False):
        super().__init__(engine, device, offload)
        self.inputs = inputs

    @classmethod
    def build(cls, engine, device, plan, parts):
        def inputs(batch: Batch) -> dict[str, Any]:
            return plan.mode.inputs(batch, plan.implementation, device, plan.dtype)

        return cls(engine, device, inputs, plan.trainer.offload_activations)

    def run(self, batch: Batch) -> torch.Tensor:
        loss = self.engine(**self.inputs(batch)).loss
        self.engine.backward(loss)
        return loss.detach()


def no_masks(batch: Batch) -> dict[str, Any]:
    return {}


def mode_masks(plan: TrainingPlan, device: torch.device) -> Callable[[Batch], dict[str, Any]]:
    """The attention mode's mask arguments of a batch (of the whole window, for a rank's slice
    under sequence parallelism: `dprope.train.attention`)."""

    def masks(batch: Batch) -> dict[str, Any]:
        return plan.mode.masks(batch, plan.implementation, device, plan.dtype)

    return masks


class UlyssesStep(MicroStep):
    """This rank's slice of a sequence its SP group of ``size`` ranks shares (``group`` None and
    ``size`` 1: a whole sequence on one rank); ``masks``: the attention mode's mask arguments of
    a batch (document and anchor attention)."""

    def __init__(
        self,
        engine,
        device,
        group: Any = None,
        size: int = 1,
        offload: bool = False,
        masks: Callable[[Batch], dict[str, Any]] = no_masks,
    ):
        super().__init__(engine, device, offload)
        self.group, self.size, self.masks = group, size, masks

    @classmethod
    def build(cls, engine, device, plan, parts):
        return cls(
            engine,
            device,
            parts.sp_group,
            plan.trainer.sequence_parallel_size,
            plan.trainer.offload_activations,
            mode_masks(plan, device),
        )

    def targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input ids, position ids, next-token labels, labelled tokens of the whole sequences).

        The labels: the collate's own next-token targets when the data reads one token more
        (``targets`` under SP, ``shift_labels`` without), else those the SP adapter shifted
        before the split, else ``labels`` shifted here."""
        input_ids = batch["input_ids"].to(self.device)
        position_ids = batch["position_ids"].to(self.device)
        if "targets" in batch:
            targets = batch["targets"]
        elif "shift_labels" in batch:
            targets = batch["shift_labels"]
        else:
            targets = shift_labels(batch["labels"])
        targets = targets.to(self.device).contiguous()  # (batch, local seq); the adapter hands out slices
        count = (targets != IGNORE_INDEX).sum()
        if self.group is not None:
            dist.all_reduce(count, group=self.group)
        return input_ids, position_ids, targets, count.clamp(min=1)

    def group_loss(self, share: torch.Tensor) -> torch.Tensor:
        if self.group is not None:
            dist.all_reduce(share, group=self.group)
        return share

    def run(self, batch: Batch) -> torch.Tensor:
        input_ids, position_ids, targets, count = self.targets(batch)
        share = self.engine(
            input_ids=input_ids,
            position_ids=position_ids,
            labels=targets,
            shift_labels=targets,
            num_items_in_batch=count,  # HF's loss then returns this slice's sum / the group's count
            **self.masks(batch),
        ).loss
        self.engine.backward(share * self.size)
        return share.detach()


class TiledLossStep(UlyssesStep):
    """This rank's share of the loss via `TiledFusedLogitsLoss`, the logits never whole.

    The library runs each tile's backward inside its forward (weight gradients included) and only
    rescales the input's gradient by what reaches its output later, so its output must be the
    final contribution and receive a gradient of exactly 1: the tile function applies N, 1 / count
    and 1 / accumulation itself, and DeepSpeed's own division by the accumulation is off here.
    ``final_hidden`` receives the final norm's output of every forward (`capture_final_hidden`).
    """

    def __init__(
        self,
        engine,
        device,
        final_hidden: list,
        shards: int | None = None,
        group: Any = None,
        size: int = 1,
        offload: bool = False,
        masks: Callable[[Batch], dict[str, Any]] = no_masks,
    ):
        super().__init__(engine, device, group, size, offload, masks)
        self.final_hidden, self.shards = final_hidden, shards

    @classmethod
    def build(cls, engine, device, plan, parts):
        if parts.final_hidden is None:
            raise ValueError("the tiled loss needs the final hidden states captured (FinalHiddenCapture)")
        trainer = plan.trainer
        return cls(
            engine,
            device,
            parts.final_hidden,
            trainer.tiled_shards,
            parts.sp_group,
            trainer.sequence_parallel_size,
            trainer.offload_activations,
            mode_masks(plan, device),
        )

    def run(self, batch: Batch) -> torch.Tensor:
        from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledFusedLogitsLoss

        input_ids, position_ids, targets, count = self.targets(batch)
        engine, model = self.engine, self.engine.module
        no_logits = torch.empty(0, dtype=torch.long, device=input_ids.device)  # lm_head runs on 0 tokens
        self.final_hidden.clear()
        engine(input_ids=input_ids, position_ids=position_ids, logits_to_keep=no_logits, **self.masks(batch))
        hidden = self.final_hidden.pop()  # (batch, local seq, hidden)
        scale = self.size / engine.gradient_accumulation_steps()

        def tile_loss(lm_head, x, y):
            logits = lm_head(x).float()  # (tile tokens, vocab)
            total = torch.nn.functional.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
            return total * scale / count

        shards = logits_shards(self.shards, targets.numel(), model.config.vocab_size)
        params = [p for p in model.lm_head.parameters() if p.requires_grad]
        loss = TiledFusedLogitsLoss.apply(
            tile_loss, model.lm_head, hidden, targets, None, shards, params, "sum"
        )
        engine.backward(loss, scale_wrt_gas=False)
        return loss.detach() / scale


def choose_micro_step(sequence_parallel_size: int, tiled: bool) -> type[MicroStep]:
    """The one kind a run uses: tiled loss, else Ulysses with SP, else plain."""
    if tiled:
        return TiledLossStep
    if sequence_parallel_size > 1:
        return UlyssesStep
    return PlainStep
