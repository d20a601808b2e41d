"""Sequences longer than one GPU holds: DeepSpeed's Arctic Long Sequence Training (ALST) parts.

ALST (Bekman et al., 2025, arXiv:2506.13996) ships in `deepspeed.runtime.sequence_parallel.ulysses_sp`;
this module only wires its parts into the trainer, it implements none of them:

- `UlyssesSPAttentionHF`: Ulysses sequence parallelism (Jacobs et al., 2023). Each of the N ranks of
  a sequence-parallel (SP) group holds 1/N of every sequence; around attention an all-to-all trades
  the sequence split for a split of the heads, so every rank attends over the whole sequence with
  H/N heads, and a second all-to-all restores the sequence split. Causal attention only: the
  library drops 4D masks and rebuilds causality from the gathered ``position_ids``.
- `UlyssesSPDataLoaderAdapter`: gathers one micro-batch from each rank of the group and hands
  every rank its slice of each, in turn; ``labels`` become ``shift_labels``, shifted before the
  split so the label of a slice's last token is the next slice's first token.
- `TiledMLP` and `TiledFusedLogitsLoss`: the MLP and the logits + cross-entropy, a tile of the
  sequence at a time; the full (tokens x intermediate) and (tokens x vocab) tensors never exist.
- `get_checkpoint_hidden_states_offloading_ctx_manager`: gradient-checkpoint inputs go to pinned CPU
  memory between forward and backward (GPU only; on CPU there is nothing to move).

Rotary positions stay global: the adapter slices ``position_ids`` with the tokens, so the rank
holding tokens [t, t + T/N) rotates them by positions t.., exactly as one GPU would.

Loss: the SP group's loss is the token-weighted mean over the whole sequence, sum of the slices'
cross-entropy sums / the group's count of labelled tokens. Each rank backpropagates N times its own
term, which is what DeepSpeed's recipe (a differentiable all-gather of the terms, summed on every
rank) sends back to it; ZeRO-3 then divides the gradients by the whole world size and the result
is the single-GPU gradient (tested: `tests/train/test_long_context.py`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from dprope.config import ConfigError
from dprope.train.config import TrainerConfig

IGNORE_INDEX = -100
# attention modes (`trainer.attention`) DeepSpeed's Ulysses attention can run: it drops every 4D mask
SEQUENCE_PARALLEL_ATTENTION = ("causal",)
LOGITS_TILE_BYTES = 2**30  # automatic logits tiles hold at most this much float32


def check_long_context(trainer: TrainerConfig, hf_config: Any, max_length: int, attention: str) -> None:
    """Every sequence-parallel requirement that needs no model (heads, length, attention): one-line
    errors naming the field, before anything loads."""
    size = trainer.sequence_parallel_size
    if size == 1:
        return
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    if heads % size:
        raise ConfigError(
            "trainer.sequence_parallel_size", f"{size} does not divide the model's {heads} attention heads"
        )
    if kv_heads % size and size % kv_heads:
        # the library replicates key/value heads when the SP size is a multiple of their number
        raise ConfigError(
            "trainer.sequence_parallel_size",
            f"{size} and the model's {kv_heads} key/value heads do not divide one another",
        )
    if max_length % size:
        raise ConfigError(
            "trainer.sequence_parallel_size", f"{size} does not divide the sequence length {max_length}"
        )
    if attention == "eager":
        raise ConfigError(
            "trainer.attn_implementation",
            "eager cannot run with sequence parallelism; use sdpa or flash_attention_2",
        )
    mode = getattr(trainer, "attention", "causal")  # the attention mode, where the trainer has one
    if mode not in SEQUENCE_PARALLEL_ATTENTION:
        raise ConfigError(
            "trainer.attention",
            f"{mode} attention cannot run with sequence_parallel_size > 1: DeepSpeed's Ulysses attention "
            "is causal only (it drops document masks)",
        )


@dataclass
class LongContext:
    """What the forward/backward of a micro-step needs to know about SP and tiling."""

    sequence_parallel_size: int = 1
    group: Any = None  # the SP process group (None: no SP)
    tiled: bool = False
    shards: int | None = None  # tiles per sequence shard; None = automatic
    offload: bool = False
    final_hidden: list = field(default_factory=list)  # the final norm's output, captured per forward

    @classmethod
    def from_trainer(cls, trainer: TrainerConfig) -> LongContext:
        return cls(
            sequence_parallel_size=trainer.sequence_parallel_size,
            tiled=trainer.tiled_compute,
            shards=trainer.tiled_shards,
            offload=trainer.offload_activations,
        )

    @property
    def plain(self) -> bool:
        """Neither SP nor tiling: the model's own loss, as without this module."""
        return self.sequence_parallel_size == 1 and not self.tiled


def register_sequence_parallel(model, trainer: TrainerConfig, attention: str):
    """Route the model's attention through Ulysses and build the SP groups; returns DeepSpeed's
    ``mpu`` (None without SP). Must run before `deepspeed.initialize`, which takes the ``mpu``."""
    if trainer.sequence_parallel_size == 1:
        return None
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

    return UlyssesSPAttentionHF.register_with_transformers(
        model_name_or_path=model,
        core_attn_implementation=attention,
        sequence_parallel_size=trainer.sequence_parallel_size,
        micro_batch_size=trainer.micro_batch_size,
        seq_length_is_variable=True,  # the length benchmark changes it between runs
    )


def mlp_shards(trainer: TrainerConfig, seq_len: int, hidden_size: int) -> int:
    """Tiles of the MLP input: configured, else tiles of ``hidden_size`` tokens (ALST's rule).
    A function of shapes only, so every rank agrees without a collective."""
    return trainer.tiled_shards or max(1, math.ceil(seq_len / hidden_size))


def logits_shards(shards: int | None, tokens: int, vocab_size: int) -> int:
    """Tiles of the logits: configured, else as many as keep each float32 tile under 1 GiB."""
    return shards or max(1, math.ceil(tokens * vocab_size * 4 / LOGITS_TILE_BYTES))


def _mlp_body(mlp, x):
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def apply_tiled_mlp(model: torch.nn.Module, trainer: TrainerConfig) -> int:
    """Replace the forward of every gated MLP (Llama family) of this model instance by DeepSpeed's
    `TiledMLP`; returns how many."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    hidden_size = model.config.hidden_size
    patched = 0
    for module in model.modules():
        if not all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            continue

        def tiled_forward(x, mlp=module):
            shards = mlp_shards(trainer, x.shape[-2], hidden_size)
            params = [p for p in mlp.parameters() if p.requires_grad]
            return TiledMLP.apply(_mlp_body, mlp, x, shards, params)

        module.forward = tiled_forward
        patched += 1
    return patched


def capture_final_hidden(model: torch.nn.Module, plan: LongContext) -> None:
    """Keep the final norm's output (what ``lm_head`` reads) for the tiled logits-loss."""
    norm = model.get_decoder().norm

    def keep(_module, _inputs, output):
        plan.final_hidden.append(output)

    norm.register_forward_hook(keep)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels of the next token (the last gets none), as the SP adapter and HF's loss shift them."""
    return torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].contiguous()


class _WholeSequenceTensors:
    """The loader's batches without the whole-window varlen offsets (``cu_seqlens``,
    ``max_length``): they describe the unsharded rows, and DeepSpeed's adapter shards every tensor
    along the sequence and wants each to be (batch, seq)."""

    DROPPED = ("cu_seqlens", "max_length")

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        batches = iter(self.loader)  # now, not at the first batch: it draws from the torch RNG
        return ({k: v for k, v in batch.items() if k not in self.DROPPED} for batch in batches)


def sp_loader(loader, runtime, plan: LongContext):
    """DeepSpeed's adapter: this rank's slice of each of its group's micro-batches, in turn."""
    if plan.sequence_parallel_size == 1:
        return loader
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPDataLoaderAdapter

    return UlyssesSPDataLoaderAdapter(
        _WholeSequenceTensors(loader),
        sp_rank=dist.get_rank(group=plan.group),
        sp_group=plan.group,
        sp_world_size=plan.sequence_parallel_size,
        device=runtime.device,
    )


def forward_backward(
    engine,
    batch: dict[str, Any],
    device,
    plan: LongContext,
    inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns its loss value (detached, on device).

    ``inputs`` turns the plain path's batch into the forward's arguments (the trainer passes
    `dprope.train.attention.model_inputs` with its attention mode: varlen segments, document
    masks; None = plain causal rows). Without SP or tiling this is the model's own mean loss.
    Otherwise the value is the SP group's token-weighted mean, and this rank backpropagates N x
    its own share of it (module doc).
    """
    with offload_context(plan):
        if plan.plain:  # the collate's varlen segments included (`dprope.train.attention`)
            if inputs is None:
                from dprope.train.attention import model_inputs

                arguments = model_inputs(batch, "sdpa", device)  # causal rows, no document mask
            else:
                arguments = inputs(batch)
            loss = engine(**arguments).loss
            engine.backward(loss)
            return loss.detach()
        input_ids = batch["input_ids"].to(device)
        position_ids = batch["position_ids"].to(device)
        targets = batch["shift_labels"] if "shift_labels" in batch else shift_labels(batch["labels"])
        targets = targets.to(device).contiguous()  # (batch, local seq); the adapter hands out slices
        count = (targets != IGNORE_INDEX).sum()
        if plan.group is not None:
            dist.all_reduce(count, group=plan.group)  # labelled tokens of the whole sequences
        count = count.clamp(min=1)
        if plan.tiled:
            share = _tiled_forward_backward(engine, input_ids, position_ids, targets, count, plan)
        else:
            share = engine(
                input_ids=input_ids,
                position_ids=position_ids,
                labels=targets,
                shift_labels=targets,
                num_items_in_batch=count,  # HF's loss then returns this slice's sum / the group's count
            ).loss
            engine.backward(share * plan.sequence_parallel_size)
            share = share.detach()
    if plan.group is not None:
        dist.all_reduce(share, group=plan.group)
    return share


def _tiled_forward_backward(engine, input_ids, position_ids, targets, count, plan: LongContext):
    """This rank's share of the loss via `TiledFusedLogitsLoss`, the logits never whole.

    The library runs each tile's backward inside its forward (weight gradients included) and only
    rescales the input's gradient by what reaches its output later, so its output must be the
    final contribution and receive a gradient of exactly 1: the tile function applies N, 1 / count
    and 1 / accumulation itself, and DeepSpeed's own division by the accumulation is off here.
    """
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledFusedLogitsLoss

    model = engine.module
    no_logits = torch.empty(0, dtype=torch.long, device=input_ids.device)  # lm_head runs on 0 tokens
    plan.final_hidden.clear()
    engine(input_ids=input_ids, position_ids=position_ids, logits_to_keep=no_logits)
    hidden = plan.final_hidden.pop()  # (batch, local seq, hidden)
    scale = plan.sequence_parallel_size / engine.gradient_accumulation_steps()

    def tile_loss(lm_head, x, y):
        logits = lm_head(x).float()  # (tile tokens, vocab)
        total = torch.nn.functional.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
        return total * scale / count

    shards = logits_shards(plan.shards, targets.numel(), model.config.vocab_size)
    params = [p for p in model.lm_head.parameters() if p.requires_grad]
    loss = TiledFusedLogitsLoss.apply(tile_loss, model.lm_head, hidden, targets, None, shards, params, "sum")
    engine.backward(loss, scale_wrt_gas=False)
    return loss.detach() / scale


def offload_context(plan: LongContext):
    """DeepSpeed's checkpoint-input offload around a forward and backward, or nothing."""
    if not plan.offload:
        return contextlib.nullcontext()
    from deepspeed.runtime.activation_checkpointing.offload_activations import (
        get_checkpoint_hidden_states_offloading_ctx_manager,
    )

    return get_checkpoint_hidden_states_offloading_ctx_manager()
