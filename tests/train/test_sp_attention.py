"""Document and anchor attention under Ulysses sequence parallelism: the whole window's segments
travel whole through DeepSpeed's loader adapter, and SP=2 on two CPU processes gives the
single-process losses and gradients in every mode (slow)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dprope.data.segments import ANCHOR, collate_segments
from dprope.train.attention import ATTENTION_MODES, document_mask, window_segments
from dprope.train.long_context import _WholeWindows
from tests.train.conftest import ROOT, train_env

BOS = 1


def items(extra_target: bool) -> list[dict]:
    rows = []
    for starts, seed in (([0, 9, 30], 0), ([5, 40], 1)):
        ids = torch.randint(3, 250, (48,), generator=torch.Generator().manual_seed(seed))
        ids[starts] = BOS
        row = {"input_ids": ids, "doc_starts": torch.tensor(starts), "length": 48}
        if extra_target:
            row["next_token"] = 77
        rows.append(row)
    return rows


def slices(batch: dict, size: int = 2) -> list[dict]:
    """What DeepSpeed's adapter gives each rank: tensors cut along the sequence, the rest whole."""
    chunk = batch["input_ids"].shape[1] // size
    return [
        {k: v[:, r * chunk : (r + 1) * chunk] if torch.is_tensor(v) else v for k, v in batch.items()}
        for r in range(size)
    ]


def test_the_whole_windows_segments_travel_whole_and_rebuild_the_collates():
    batch = collate_segments(items(extra_target=True), ANCHOR, BOS)
    (prepared,) = list(_WholeWindows([dict(batch)]))
    assert "segment_ids" not in prepared and "cu_seqlens" not in prepared and "shift_labels" not in prepared
    assert (
        prepared["window_cu_seqlens"] == batch["cu_seqlens"].tolist()
    )  # a list: the adapter copies it whole
    assert torch.equal(prepared["targets"], batch["shift_labels"])  # sliced with the tokens, not re-shifted
    for part in slices(prepared):
        window, segment_ids = window_segments(part)
        # every rank's masks are those of the whole window, ids renumbered across rows only
        assert torch.equal(document_mask(segment_ids), document_mask(batch["segment_ids"]))
        assert (
            torch.equal(window["cu_seqlens"], batch["cu_seqlens"])
            and window["max_length"] == batch["max_length"]
        )


def test_a_slice_gets_the_whole_windows_mask_and_flash_offsets():
    batch = collate_segments(items(extra_target=False), ANCHOR, BOS)
    (prepared,) = list(_WholeWindows([dict(batch)]))
    mode, cpu = ATTENTION_MODES["anchor"], torch.device("cpu")
    whole = mode.masks(batch, "sdpa", cpu)["attention_mask"]
    for part in slices(prepared):
        assert torch.equal(mode.masks(part, "sdpa", cpu)["attention_mask"], whole)  # (batch, 1, 48, 48)
        flash = mode.masks(part, "flash_attention_2", cpu)
        assert flash["cu_seq_lens_q"].tolist() == batch["cu_seqlens"].tolist()
        assert flash["max_length_q"] == batch["max_length"]
    assert ATTENTION_MODES["causal"].masks(prepared, "sdpa", cpu) == {}  # causal: DeepSpeed's own rule


def run_sp_masked(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "tests.train.sp_masked", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_sequence_parallel_gives_the_single_process_losses_and_gradients_in_every_mode():
    done = run_sp_masked(env=train_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for case in (
        "document/standard",
        "anchor/standard",
        "anchor/anchorcontext",
        "anchor/anchorcontext/tiled",
    ):
        assert f"sp masked: {case}: losses" in done.stdout
    assert "sp masked: ok" in done.stdout


@pytest.mark.parametrize("context", ["32k", "64k", "128k"])
def test_the_long_context_presets_plan_with_anchor_attention(context):
    """The presets at full size (random init: no weights here) with `trainer.attention=anchor`: the
    authors' packing, Ulysses with the window's masks kept, the tiled loss with the mode's masks."""
    from dprope.cli import compose_config
    from dprope.train.config import RunConfig
    from dprope.train.micro_step import TiledLossStep
    from dprope.train.plan import plan_run
    from dprope.train.transforms import UlyssesAttention

    overrides = [
        f"+experiment=llama7b_{context}_ours",
        "trainer.attention=anchor",
        "model.pretrained=null",
        "model.tokenizer=byte",
    ]
    run = RunConfig.from_config(compose_config("train", overrides))
    assert (run.data.add_eos, run.data.packing, run.data.extra_target) == (False, "pieces", True)
    plan = plan_run(run, world_size=8)
    (ulysses,) = [t for t in plan.transforms if isinstance(t, UlyssesAttention)]
    assert ulysses.keep_masks and ulysses.size == run.trainer.sequence_parallel_size
    assert plan.micro_step is TiledLossStep and plan.accumulation % ulysses.size == 0
    assert plan.seq_len % ulysses.size == 0  # the inputs split evenly; the extra target is no input


def _anchor_step(tiny_model_cfg, tiled: bool):
    """One micro-step of the tiny model (ZeRO-3, one process) on two packed anchor windows."""
    from deepspeed.utils import safe_get_full_grad

    from dprope.data.config import ANCHORCONTEXT
    from dprope.rope.registry import rope_config
    from dprope.train.config import TrainerConfig
    from dprope.train.micro_step import PlainStep, TiledLossStep
    from tests.train.conftest import materialised, tiny_plan
    from tests.train.sp_masked import windows

    trainer = TrainerConfig(
        global_batch_size=2, micro_batch_size=2, tiled_compute=tiled, tiled_shards=2, attention="anchor"
    )
    plan = tiny_plan(tiny_model_cfg, trainer, rope_config({"name": "pi", "factor": 2.0}), seq_len=64)
    built = materialised(plan)
    assert type(built.micro_step) is (TiledLossStep if tiled else PlainStep)
    loss = float(built.micro_step(plan.mode.collate(BOS)(windows(ANCHORCONTEXT))))
    weight = built.engine.module.model.layers[1].self_attn.q_proj.weight
    return loss, safe_get_full_grad(weight).clone()


def test_the_tiled_loss_attends_as_the_mode_says(tiny_model_cfg):
    # before, the tiled step passed no mask: anchor attention silently ran causal over the window
    loss, grad = _anchor_step(tiny_model_cfg, tiled=False)
    tiled_loss, tiled_grad = _anchor_step(tiny_model_cfg, tiled=True)
    assert tiled_loss == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(tiled_grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_an_anchor_run_with_sequence_parallelism_trains_as_one_process(tmp_path, data_cache):
    """launch/train.py end to end: the authors' packing built into the cache, the SP loader, the
    Ulysses step with the window's masks; the losses and gradient norms of one process."""
    from tests.train.conftest import read_metrics, run_train, small_run

    overrides = [
        "trainer.attention=anchor",
        "trainer.steps=3",
        "trainer.save_every=0",
        "trainer.export=false",
    ]
    one = run_train(small_run(tmp_path / "sp1", data_cache, *overrides))
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = run_train(
        small_run(tmp_path / "sp2", data_cache, *overrides, "trainer.sequence_parallel_size=2"),
        launcher=torchrun,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "sequence parallel 2" in two.stdout
    ours, reference = read_metrics(tmp_path / "sp2"), read_metrics(tmp_path / "sp1")
    assert [r["step"] for r in ours] == [1, 2, 3]
    assert [r["loss"] for r in ours] == pytest.approx([r["loss"] for r in reference], rel=1e-5)
    assert [r["grad_norm"] for r in ours] == pytest.approx([r["grad_norm"] for r in reference], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["flash_attention_2", "flex_attention"])
def test_the_kernels_under_sequence_parallelism_on_two_gpus(kernel):
    """flash-attn's varlen offsets and the FlexAttention block mask of the whole window under SP=2
    against float32 SDPA on one GPU, within bf16 tolerance. Needs two GPUs; not run here."""
    from dprope.model import flash_attn_available

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    if kernel == "flash_attention_2" and not flash_attn_available():
        pytest.skip("flash-attn is not installed")
    env = {k: v for k, v in train_env().items() if k != "DS_ACCELERATOR"}
    done = run_sp_masked(kernel, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "sp masked: ok" in done.stdout
