"""Sequences longer than one GPU holds: DeepSpeed's Arctic Long Sequence Training (ALST) parts.

ALST (Bekman et al., 2025, arXiv:2506.13996) ships in `deepspeed.runtime.sequence_parallel.ulysses_sp`;
this module only wires its parts into the trainer, it implements none of them:

- `UlyssesSPAttentionHF`: Ulysses sequence parallelism (Jacobs et al., 2023). Each of the N ranks of
  a sequence-parallel (SP) group holds 1/N of every sequence; around attention an all-to-all trades
  the sequence split for a split of the heads, so every rank attends over the whole sequence with
  H/N heads, and a second all-to-all restores the sequence split. The library's registered
  wrapper drops 4D masks and rebuilds causality from the gathered ``position_ids`` (causal
  attention); for the document and anchor modes the wrapper here hands the whole window's mask,
  given by the step, to the kernel instead (`register_sequence_parallel`).
- `UlyssesSPDataLoaderAdapter`: gathers one micro-batch from each rank of the group and hands
  every rank its slice of each, in turn; ``labels`` become ``shift_labels``, shifted before the
  split so the label of a slice's last token is the next slice's first token.
- `TiledMLP` and `TiledFusedLogitsLoss`: the MLP and the logits + cross-entropy, a tile of the
  sequence at a time; the full (tokens x intermediate) and (tokens x vocab) tensors never exist.
- `get_checkpoint_hidden_states_offloading_ctx_manager`: gradient-checkpoint inputs go to pinned CPU
  memory between forward and backward (GPU only; on CPU there is nothing to move).

Rotary positions stay global: the adapter slices ``position_ids`` with the tokens, so the rank
holding tokens [t, t + T/N) rotates them by positions t.., exactly as one GPU would (by the
document and anchor modes' positions, which the collate built for the whole window). The
segments of the whole window travel whole (`sp_loader`), as the AnchorAttention authors pass
their global masking positions and document ids to every rank.

The model transforms that apply these parts are in `dprope.train.transforms`, the micro-steps that
use them (the SP group's loss, the tiled loss) in `dprope.train.micro_step`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.distributed as dist

from dprope.config import ConfigError
from dprope.instance_patch import override_globals
from dprope.train.attention import ATTENTION_MODES
from dprope.train.config import TrainerConfig

IGNORE_INDEX = -100
LOGITS_TILE_BYTES = 2**30  # automatic logits tiles hold at most this much float32


def check_long_context(trainer: TrainerConfig, hf_config: Any, max_length: int, implementation: str) -> None:
    """Every sequence-parallel requirement that needs no model (heads, length, attention kernel
    and mode): one-line errors naming the field, before anything loads."""
    size = trainer.sequence_parallel_size
    if size == 1:
        return
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    if not ulysses_splits(heads, kv_heads, size):
        # DeepSpeed splits the query heads evenly over the group and replicates key/value heads
        # when the group outnumbers them (UlyssesSPAttentionHF: kv_replication_factor)
        works = [n for n in range(1, heads + 1) if ulysses_splits(heads, kv_heads, n)]
        raise ConfigError(
            "trainer.sequence_parallel_size",
            f"{size} cannot split the model's {heads} query and {kv_heads} key/value heads (DeepSpeed Ulysses "
            f"needs heads divisible by it and key/value heads dividing it or divisible by it); sizes that "
            f"work: {', '.join(map(str, works))}",
        )
    if max_length % size:
        raise ConfigError(
            "trainer.sequence_parallel_size", f"{size} does not divide the sequence length {max_length}"
        )
    if implementation == "eager":
        raise ConfigError(
            "trainer.attn_implementation",
            "eager cannot run with sequence parallelism; use sdpa or flash_attention_2",
        )
    if not ATTENTION_MODES[trainer.attention].sequence_parallel:
        raise ConfigError(
            "trainer.attention", f"{trainer.attention} attention cannot run with sequence_parallel_size > 1"
        )


def ulysses_splits(heads: int, kv_heads: int, size: int) -> bool:
    """Whether DeepSpeed's Ulysses attention runs ``heads`` query and ``kv_heads`` key/value heads
    over ``size`` ranks: the query heads split evenly; the key/value heads split evenly, or are
    replicated ``size / kv_heads`` times when fewer (Qwen2.5's 4 at SP=8 would be, but its 28
    query heads do not split over 8)."""
    return heads % size == 0 and (kv_heads % size == 0 or size % kv_heads == 0)


def register_sequence_parallel(
    model: torch.nn.Module, implementation: str, size: int, micro_batch_size: int, keep_masks: bool = False
):
    """Route this model instance's attention through DeepSpeed's Ulysses attention and build the SP
    groups; returns DeepSpeed's ``mpu`` (for `deepspeed.initialize`) and the number of attention
    modules routed.

    ``keep_masks`` (the document and anchor modes): the routed attention is DeepSpeed's
    `UlyssesSPAttentionHF` itself, which hands the attention mask and the keyword arguments to the
    kernel after the all-to-all as it receives them, rather than the wrapper DeepSpeed registers,
    which drops every tensor mask (built, in plain use, for the rank's slice) and replaces a
    FlexAttention block mask by a causal one. The step gives the whole window's mask: an SDPA
    mask (batch, 1, seq, seq), a block mask, or flash-attn's varlen offsets (no mask).

    DeepSpeed's `UlyssesSPAttentionHF.register_with_transformers` puts its wrapper in place of
    ``implementation`` in transformers' process-wide ``ALL_ATTENTION_FUNCTIONS`` (so that every
    check of ``config._attn_implementation`` inside transformers still sees the real kernel). Here
    the process-wide registry gets its own entry back at once, and only this model's attention
    modules look the wrapper up, through their own copy of ``ALL_ATTENTION_FUNCTIONS``
    (`dprope.instance_patch`): a model built later in the process attends as transformers does.
    """
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    previous = ALL_ATTENTION_FUNCTIONS[implementation]
    mpu = UlyssesSPAttentionHF.register_with_transformers(
        model_name_or_path=model,
        core_attn_implementation=implementation,
        sequence_parallel_size=size,
        micro_batch_size=micro_batch_size,
        seq_length_is_variable=True,  # the length benchmark changes it between runs
    )
    ulysses = ALL_ATTENTION_FUNCTIONS[implementation]
    if keep_masks:
        ulysses = _ulysses_attention(model, previous, mpu.get_sequence_parallel_group(), micro_batch_size)
    del ALL_ATTENTION_FUNCTIONS[implementation]  # DeepSpeed's process-wide entry
    if ALL_ATTENTION_FUNCTIONS[implementation] is not previous:  # an entry of someone else's, before it
        ALL_ATTENTION_FUNCTIONS[implementation] = previous
    own = AttentionInterface()  # the transformers registry, with the wrapper for this model only
    own[implementation] = ulysses
    routed = sum(override_globals(m, {"ALL_ATTENTION_FUNCTIONS": own}) for m in model.modules())
    if not routed:
        raise ValueError(f"{type(model).__name__}: no attention module reads ALL_ATTENTION_FUNCTIONS")
    return mpu, routed


def _ulysses_attention(model: torch.nn.Module, core, group, micro_batch_size: int):
    """DeepSpeed's Ulysses attention around the kernel ``core``, built as its registration builds
    it (a variable sequence length), without the registered wrapper around it."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

    config = model.config.get_text_config()
    heads = config.num_attention_heads
    return UlyssesSPAttentionHF(
        attn=core,
        batch_size=micro_batch_size,
        attn_head_count=heads,
        attn_head_size=getattr(config, "head_dim", None) or config.hidden_size // heads,
        kv_head_count=getattr(config, "num_key_value_heads", None) or heads,
        num_hidden_layers=config.num_hidden_layers,
        process_group=group,
        seq_length_is_variable=True,
    )  # its core_attn_implementation stays None: a block mask is not replaced by a causal one


def mlp_shards(shards: int | None, seq_len: int, hidden_size: int) -> int:
    """Tiles of the MLP input: configured, else tiles of ``hidden_size`` tokens (ALST's rule).
    A function of shapes only, so every rank agrees without a collective."""
    return shards or max(1, math.ceil(seq_len / hidden_size))


def logits_shards(shards: int | None, tokens: int, vocab_size: int) -> int:
    """Tiles of the logits: configured, else as many as keep each float32 tile under 1 GiB."""
    return shards or max(1, math.ceil(tokens * vocab_size * 4 / LOGITS_TILE_BYTES))


def _mlp_body(mlp, x):
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def apply_tiled_mlp(model: torch.nn.Module, shards: int | None) -> int:
    """Replace the forward of every gated MLP (Llama family) of this model instance by DeepSpeed's
    `TiledMLP`; returns how many."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    hidden_size = model.config.hidden_size
    patched = 0
    for module in model.modules():
        if not all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            continue

        def tiled_forward(x, mlp=module):
            tiles = mlp_shards(shards, x.shape[-2], hidden_size)
            params = [p for p in mlp.parameters() if p.requires_grad]
            return TiledMLP.apply(_mlp_body, mlp, x, tiles, params)

        module.forward = tiled_forward
        patched += 1
    return patched


def capture_final_hidden(model: torch.nn.Module, sink: list) -> None:
    """Append the final norm's output (what ``lm_head`` reads) to ``sink`` at every forward, for
    the tiled logits-loss."""
    norm = model.get_decoder().norm

    def keep(_module, _inputs, output):
        sink.append(output)

    norm.register_forward_hook(keep)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels of the next token (the last gets none), as the SP adapter and HF's loss shift them."""
    return torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].contiguous()


class _WholeWindows:
    """The loader's batches as DeepSpeed's adapter takes them: it slices every tensor along the
    sequence (each must be (batch, seq)) and hands every other value whole to each rank.

    - ``cu_seqlens`` (the whole window's segments) becomes ``window_cu_seqlens``, a list of ints,
      so it travels whole with ``max_length``; the masked modes rebuild their masks from it
      (`dprope.train.attention.window_segments`), and ``segment_ids`` is left out;
    - ``shift_labels`` (the collate's next-token targets, ``data.extra_target``) becomes
      ``targets``, sliced with the tokens: the adapter would replace ``shift_labels`` by its own,
      shifted from ``labels``, which has no target for the window's last position.
    """

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    @staticmethod
    def _prepared(batch: dict[str, Any]) -> dict[str, Any]:
        batch = {k: v for k, v in batch.items() if k != "segment_ids"}
        if "cu_seqlens" in batch:
            batch["window_cu_seqlens"] = batch.pop("cu_seqlens").tolist()
        if "shift_labels" in batch:
            batch["targets"] = batch.pop("shift_labels")
        return batch

    def __iter__(self):
        batches = iter(self.loader)  # now, not at the first batch: it draws from the torch RNG
        return (self._prepared(batch) for batch in batches)


def sp_loader(loader, device: torch.device, group: Any, size: int):
    """DeepSpeed's adapter: this rank's slice of each of its SP group's micro-batches, in turn
    (the loader itself without sequence parallelism, ``size`` 1)."""
    if size == 1:
        return loader
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPDataLoaderAdapter

    return UlyssesSPDataLoaderAdapter(
        _WholeWindows(loader),
        sp_rank=dist.get_rank(group=group),
        sp_group=group,
        sp_world_size=size,
        device=device,
    )


def offload_context(offload: bool):
    """DeepSpeed's checkpoint-input offload around a forward and backward, or nothing."""
    if not offload:
        return contextlib.nullcontext()
    from deepspeed.runtime.activation_checkpointing.offload_activations import (
        get_checkpoint_hidden_states_offloading_ctx_manager,
    )

    return get_checkpoint_hidden_states_offloading_ctx_manager()
