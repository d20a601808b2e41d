"""Under two processes (torchrun, gloo): Ulysses sequence parallelism 2 gives the single-process
losses and gradients in every attention mode and packing convention. Prints one line
``sp masked: ok`` on success (`tests/train/test_sp_attention.py`).

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.train.sp_masked
    ... -m tests.train.sp_masked flash_attention_2      # two GPUs: the kernel under SP (bf16)

For each case, two packed windows (documents of varied lengths, some continuing from one window
into the next) go through the mode's collate, DeepSpeed's SP loader adapter (`sp_loader`) and
the planned micro-step of a ZeRO-3 engine with SP=2: each rank holds half of every window,
attention runs over the whole window after the all-to-all. The reference is the same model
(same seed) without DeepSpeed on one process: each window's loss through the mode's own inputs
(explicit document mask, positions and targets of the whole window), and the gradient of their
mean, which is what one optimizer step of two sequences accumulates. With a kernel named on the
command line (two GPUs: ``flash_attention_2`` or ``flex_attention``), the SP run uses it in the
plan's precision (bf16), the reference stays float32 SDPA, and the tolerances are bf16's.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

BOS, EOS, PAD = 1, 2, 0
SEQ = 64  # tokens per window: 32 on each rank
CASES = [  # (attention mode, packing conventions, tiled compute)
    ("causal", "anchorcontext", False),  # the extra target through the adapter
    ("document", "standard", False),
    (
        "anchor",
        "standard",
        False,
    ),  # a window that begins inside a document: the anchor replaces its first token
    ("anchor", "anchorcontext", False),  # the authors' packing: pieces, no EOS, T targets
    ("anchor", "anchorcontext", True),  # the long-context presets' path: SP with the tiled loss
]
WEIGHTS = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
)


def windows(conventions) -> list[dict]:
    """Two windows of ``SEQ`` inputs packed from the same documents by the data layer's functions."""
    from dprope.data.dataset import as_item
    from dprope.data.packing import pack_stream, window_pieces

    rng = np.random.default_rng(0)
    lengths = [
        11,
        1,
        30,
        9,
        2,
        25,
        41,
        7,
        19,
        60,
    ]  # with BOS: some of <= 2 tokens, some cut at a window's end
    eos = [EOS] if conventions.add_eos else []
    documents = [np.asarray([BOS, *rng.integers(3, 250, n - 1), *eos], dtype=np.int64) for n in lengths]
    window = SEQ + conventions.extra_target
    if conventions.packing == "pieces":
        documents = list(window_pieces(documents, window, BOS))
    packed = list(pack_stream(documents, window, True, PAD))[:2]
    assert len(packed) == 2
    return [as_item(sequence, SEQ) for sequence in packed]


def reference(plan, items, device) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Each window's loss and the gradient of their mean, one process, no DeepSpeed, float32 SDPA."""
    from dprope.train.engine import build_model
    from dprope.train.transforms import restore_rotary_frequencies

    model = build_model(plan.model, copy.deepcopy(plan.hf_config), "fp32", "sdpa", plan.trainer.seed)
    model = model.to(device)
    restore_rotary_frequencies(model, plan.scaling.inv_freq)  # as the trained model's, after its wrap
    collate = plan.mode.collate(BOS)
    losses = [model(**plan.mode.inputs(collate([item]), "sdpa", device)).loss for item in items]
    (sum(losses) / len(losses)).backward()
    parameters = dict(model.named_parameters())
    grads = {name: parameters[name].grad.detach().cpu() for name in WEIGHTS}
    return [float(loss) for loss in losses], grads


def sequence_parallel(plan, items, runtime) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The same two windows with SP=2: rank r's loader holds window r."""
    from deepspeed.utils import safe_get_full_grad

    from dprope.train.engine import materialise
    from dprope.train.long_context import sp_loader

    built = materialise(plan, runtime)
    loader = torch.utils.data.DataLoader(
        [items[runtime.rank]], batch_size=1, collate_fn=plan.mode.collate(BOS)
    )
    batches = iter(sp_loader(loader, runtime.device, built.parts.sp_group, 2))
    losses = [float(built.micro_step(next(batches)))]
    built.engine.step()  # not yet the boundary: counts the micro-step
    losses.append(float(built.micro_step(next(batches))))
    parameters = dict(built.engine.module.named_parameters())
    grads = {name: safe_get_full_grad(parameters[name]).float().cpu() for name in WEIGHTS}
    built.engine.destroy()
    return losses, grads


def release_sequence_parallel_groups() -> None:
    """DeepSpeed keeps its SP groups in module state and refuses to build them twice: the next
    case's materialisation builds its own."""
    import deepspeed.runtime.sequence_parallel.parallel_state_sp as mpu

    mpu._release_sequence_parallel_groups()


def main() -> None:
    from dprope.data.config import ANCHORCONTEXT, STANDARD
    from dprope.model import ModelConfig
    from dprope.rope.registry import default_config
    from dprope.train.config import TrainerConfig
    from dprope.train.engine import init_distributed
    from dprope.train.micro_step import TiledLossStep, UlyssesStep
    from dprope.train.plan import plan_training

    kernel = sys.argv[1] if len(sys.argv) > 1 else "sdpa"
    runtime = init_distributed()
    loss_tolerance, grad_tolerance = (1e-5, (1e-4, 1e-6)) if kernel == "sdpa" else (2e-2, (5e-2, 1e-3))
    model_cfg = ModelConfig(name="tiny", tokenizer="byte")
    conventions = {"standard": STANDARD, "anchorcontext": ANCHORCONTEXT}
    for mode, packing, tiled in CASES:
        trainer = TrainerConfig(
            output_dir="unused",
            global_batch_size=2,
            micro_batch_size=1,
            sequence_parallel_size=2,
            attention=mode,
            tiled_compute=tiled,
            tiled_shards=2 if tiled else None,
            attn_implementation=kernel,
        )
        plan = plan_training(model_cfg, default_config("pi", 2.0), trainer, SEQ, world_size=2)
        assert plan.micro_step is (TiledLossStep if tiled else UlyssesStep) and plan.accumulation == 2
        items = windows(conventions[packing])
        expected_losses, expected_grads = reference(plan, items, runtime.device)
        losses, grads = sequence_parallel(plan, items, runtime)
        case = f"{mode}/{packing}{'/tiled' if tiled else ''}"
        np.testing.assert_allclose(losses, expected_losses, rtol=loss_tolerance, err_msg=case)
        for name in WEIGHTS:
            assert expected_grads[name].abs().sum() > 0, (case, name)
            rtol, atol = grad_tolerance
            torch.testing.assert_close(
                grads[name], expected_grads[name], rtol=rtol, atol=atol, msg=f"{case} {name}"
            )
        if runtime.rank == 0:
            print(f"sp masked: {case}: losses {losses[0]:.6f} {losses[1]:.6f} as on one process", flush=True)
        release_sequence_parallel_groups()
    if runtime.rank == 0:
        print("sp masked: ok", flush=True)


if __name__ == "__main__":
    main()
