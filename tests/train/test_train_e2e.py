"""The training job end to end on CPU: export, exact resume after SIGKILL, SIGTERM, non-finite
loss, ZeRO-3 on two processes, and one-line errors before the model loads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.conftest import (
    ROOT,
    assert_one_line_error,
    launch,
    read_metrics,
    run_train,
    small_run,
    train_env,
)

STEPS = 12
SAVE_EVERY = 3


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_cache) -> Path:
    """An uninterrupted run every interrupted one is compared with."""
    out = tmp_path_factory.mktemp("reference")
    result = run_train(
        small_run(
            out,
            data_cache,
            f"trainer.steps={STEPS}",
            f"trainer.save_every={SAVE_EVERY}",
            "data.max_length=512",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (out.parent / f"{out.name}-console.txt").write_text(result.stdout + result.stderr)
    return out


def losses(output_dir: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(output_dir)]


def wait_for_steps(process, output_dir: Path, steps: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(read_metrics(output_dir)) < steps:
        assert process.poll() is None, f"run ended early: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "run too slow"
        time.sleep(0.05)


def test_run_writes_metrics_config_and_a_vanilla_loadable_export(reference_run):
    records = read_metrics(reference_run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_gib"} <= set(records[0])
    assert records[-1]["loss"] < records[0]["loss"]
    assert (reference_run / "config.yaml").is_file()
    rope = json.loads((reference_run / "rope.json").read_text())
    assert rope["strategy"] == "dprope" and len(rope["scaling_factors"]) == 8

    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = reference_run / "hf"
    model = AutoModelForCausalLM.from_pretrained(export)  # no custom code, no remote code
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert model.config.rope_parameters["rope_type"] == "longrope"
    assert model.config.max_position_embeddings == 1024
    assert list((export).glob("*.safetensors"))

    # the trained model, rebuilt from the final DeepSpeed checkpoint, gives the same logits on an
    # input longer than the original context (L = 256)
    from dprope.model import ModelConfig
    from dprope.rope.registry import rope_config
    from dprope.train import checkpoint
    from dprope.train.config import TrainerConfig
    from tests.train.conftest import materialised, tiny_plan

    model_cfg = ModelConfig(name="tiny", tokenizer="byte")
    rope = rope_config({"name": "dprope", "factor": 4.0})
    trainer = TrainerConfig(
        output_dir=str(reference_run), global_batch_size=4, micro_batch_size=2, gradient_checkpointing=False
    )
    engine = materialised(tiny_plan(model_cfg, trainer, rope, seq_len=512)).engine
    state = checkpoint.load(engine, checkpoint.latest_checkpoint(checkpoint.checkpoint_root(reference_run)))
    assert state.step == STEPS
    text = (ROOT / "dprope" / "rope" / "analysis.py").read_text()[:600]
    input_ids = tokenizer(text, return_tensors="pt").input_ids
    assert input_ids.shape[1] > 512
    engine.eval()
    model.eval()
    with torch.no_grad():
        trained = engine(input_ids=input_ids).logits
        exported = model(input_ids=input_ids).logits
    torch.testing.assert_close(exported, trained, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_every_loss(reference_run, tmp_path, data_cache):
    overrides = small_run(
        tmp_path,
        data_cache,
        f"trainer.steps={STEPS}",
        f"trainer.save_every={SAVE_EVERY}",
        "data.max_length=512",
    )
    process = launch(overrides)
    wait_for_steps(process, tmp_path, SAVE_EVERY + 2)  # past a checkpoint, before the next
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(read_metrics(tmp_path))
    assert done < STEPS
    resumed = run_train(overrides)  # trainer.resume=auto
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(tmp_path) == losses(reference_run)


@pytest.mark.slow
def test_sigterm_saves_exits_for_requeue_and_resumes(reference_run, tmp_path, data_cache):
    from dprope.train.checkpoint import checkpoint_root, latest_checkpoint
    from dprope.train.config import EXIT_PREEMPTED

    overrides = small_run(
        tmp_path, data_cache, f"trainer.steps={STEPS}", "trainer.save_every=0", "data.max_length=512"
    )
    process = launch(overrides)
    wait_for_steps(process, tmp_path, 4)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED, stderr[-3000:]
    stopped_at = len(read_metrics(tmp_path))
    assert latest_checkpoint(checkpoint_root(tmp_path)).name == f"step_{stopped_at:08d}"
    resumed = run_train(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(tmp_path) == losses(reference_run)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, data_cache):
    from dprope.train.checkpoint import checkpoint_root, latest_checkpoint
    from dprope.train.config import EXIT_NON_FINITE

    result = run_train(
        small_run(
            tmp_path,
            data_cache,
            "trainer.steps=6",
            "trainer.save_every=1",
            "trainer.lr=1e20",
            "trainer.grad_clip=0",
        )
    )
    assert result.returncode == EXIT_NON_FINITE
    # on a line of its own (the progress bar redraws with carriage returns, lines end with \n)
    errors = [line for line in result.stderr.split("\n") if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: non-finite loss at step 2"), result.stderr[
        -2000:
    ]
    # step 1's update already diverged: its checkpoint is not one to resume from
    assert errors[0].endswith(
        "Checkpoint step_00000001 holds the weights step 2 started from: resuming it fails again. "
        "No checkpoint from which training was still finite is kept: start over (trainer.resume=never) "
        "with a lower trainer.lr."
    )
    assert latest_checkpoint(checkpoint_root(tmp_path)).name == "step_00000001"
    assert not (tmp_path / "hf").exists()


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def resumed_from(
    checkpoint_dir: Path, output_dir: Path, data_cache: Path, **launch
) -> subprocess.CompletedProcess:
    """The reference's run, continued in ``output_dir`` from one of its checkpoints."""
    overrides = small_run(
        output_dir,
        data_cache,
        f"trainer.steps={STEPS}",
        f"trainer.save_every={SAVE_EVERY}",
        "data.max_length=512",
        f"trainer.resume={checkpoint_dir}",
        "trainer.export=false",
    )
    return run_train(overrides, **launch)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, data_cache) -> Path:
    """The reference's run on two processes (ZeRO-3 partitions over both)."""
    out = tmp_path_factory.mktemp("two-ranks")
    result = run_train(
        small_run(out, data_cache, f"trainer.steps={STEPS}", "trainer.save_every=6", "data.max_length=512"),
        launcher=TORCHRUN,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world 2 x micro 2 x accumulation 1" in result.stdout
    return out


@pytest.mark.slow
def test_zero3_on_two_cpu_processes_matches_one(reference_run, two_rank_run):
    assert (two_rank_run / "hf" / "model.safetensors").is_file()
    # two ranks of 2 sequences see the same global batches as one rank accumulating twice; only
    # the order of floating-point reductions differs
    two = losses(two_rank_run)
    assert two[0] == pytest.approx(losses(reference_run)[0], rel=1e-6)
    assert two == pytest.approx(losses(reference_run), rel=1e-3)
    shards = list((two_rank_run / "checkpoints" / f"step_{STEPS:08d}").glob("zero_pp_rank_*_model_states.pt"))
    assert len(shards) == 2


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_on_one_rank_through_a_universal_conversion(
    two_rank_run, tmp_path, data_cache, caplog
):
    from dprope.train import checkpoint

    saved = two_rank_run / "checkpoints" / "step_00000006"
    result = resumed_from(saved, tmp_path, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert (
        "step_00000006 was saved by 2 rank(s), this run has 1: converting it to a universal checkpoint"
        in console
    )
    assert "world 1 x micro 2 x accumulation 2" in console
    records = read_metrics(tmp_path)
    # the exact data position: the global samples after the 6 steps done, in the same order
    assert [r["step"] for r in records] == list(range(7, STEPS + 1))
    assert [r["consumed_samples"] for r in records] == [4 * step for step in range(7, STEPS + 1)]
    # model, optimizer (Adam moments, step count) and scheduler restored: the uninterrupted run's
    # losses, up to the order of floating-point reductions
    assert losses(tmp_path) == pytest.approx(losses(two_rank_run)[6:], rel=1e-5)
    # converted once, kept next to the checkpoint and reused as it is
    universal = saved / checkpoint.UNIVERSAL
    assert (universal / checkpoint.COMPLETE).is_file() and checkpoint.verify(universal, alone=True) == []
    before = (universal / checkpoint.MANIFEST).stat().st_mtime_ns
    with caplog.at_level("INFO", logger="dprope.train.checkpoint"):
        checkpoint.ensure_universal(saved, 2, 1, rank=0)
    assert any("reusing its universal conversion" in r.message for r in caplog.records)
    assert (universal / checkpoint.MANIFEST).stat().st_mtime_ns == before


@pytest.mark.slow
def test_one_rank_checkpoint_resumes_on_two_ranks(reference_run, tmp_path, data_cache):
    result = resumed_from(
        reference_run / "checkpoints" / "step_00000009", tmp_path, data_cache, launcher=TORCHRUN
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saved by 1 rank(s), this run has 2: converting" in result.stdout + result.stderr
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 11, 12]
    assert losses(tmp_path) == pytest.approx(losses(reference_run)[9:], rel=1e-5)


@pytest.mark.slow
def test_deepspeed_launcher_resumes_a_two_rank_run_exactly(two_rank_run, tmp_path, data_cache):
    deepspeed = [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus=2"]
    if not Path(deepspeed[0]).is_file():
        pytest.skip("no deepspeed launcher next to the interpreter")
    result = resumed_from(
        two_rank_run / "checkpoints" / "step_00000006", tmp_path, data_cache, launcher=deepspeed
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world 2 x micro 2 x accumulation 1" in result.stdout
    assert "converting" not in result.stdout + result.stderr  # same world size: loaded as saved
    assert losses(tmp_path) == losses(two_rank_run)[6:]


def test_console_shows_no_per_step_collective_deprecation_warnings(reference_run):
    console = (reference_run.parent / f"{reference_run.name}-console.txt").read_text()
    assert "train:" in console  # the progress bar is there
    for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
        assert f"torch.distributed.{name}` is deprecated" not in console


@pytest.mark.parametrize(
    "override,field",
    [
        ("+experiment=llama7b_1m_ours", "experiment"),
        ("rope=clex", "rope"),
        ("trainer.global_batch_size=5", "trainer.global_batch_size"),
        ("data.max_length=2048", "data.max_length"),
        ("model.pretrained=/no/such/model", "model.pretrained"),
        ("trainer.precision=bf16", "trainer.precision"),
    ],
)
def test_bad_input_fails_in_one_line_before_the_model_loads(override, field, tmp_path, data_cache):
    if field == "trainer.precision" and torch.cuda.is_available():
        pytest.skip("bf16 is valid with a GPU")
    result = run_train([*small_run(tmp_path, data_cache), override], timeout=120)
    assert_one_line_error(result, field)
    assert not (tmp_path / "checkpoints").exists()


def test_global_batch_not_divisible_by_world_size_is_refused(tmp_path, data_cache):
    process = launch([*small_run(tmp_path, data_cache)], env=train_env(WORLD_SIZE="3"))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.strip().startswith("error: trainer.global_batch_size:"), stderr


def test_wandb_tracker_gets_every_step_the_config_and_the_strategy(tmp_path, data_cache, monkeypatch):
    """logger=wandb without an API key, in process: wandb (spied on, not replaced) receives each
    step's metrics as metrics.jsonl has them, the resolved config and the strategy summary, and
    writes an offline run named by the run directory's stable id."""
    import wandb
    from omegaconf import OmegaConf

    from dprope.cli import compose_config
    from dprope.train.config import RunConfig
    from dprope.train.loop import train

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logged, at_finish = [], {}
    real_log, real_finish = wandb.Run.log, wandb.Run.finish

    def log(self, data, step=None, **kwargs):
        logged.append((step, dict(data)))
        return real_log(self, data, step=step, **kwargs)

    def finish(self, *args, **kwargs):
        at_finish.update(config=dict(self.config), summary=dict(self.summary))
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", log)
    monkeypatch.setattr(wandb.Run, "finish", finish)
    overrides = small_run(tmp_path, data_cache, "trainer.steps=2", "trainer.export=false")
    cfg = compose_config("train", [*overrides, "logger=wandb", "logger.mode=offline"])
    assert train(RunConfig.from_config(cfg), OmegaConf.to_container(cfg, resolve=True)) == 0

    records = read_metrics(tmp_path)
    assert [step for step, _ in logged] == [record["step"] for record in records] == [1, 2]
    for (_, data), record in zip(logged, records, strict=True):
        assert data == {f"train/{k}": v for k, v in record.items() if k != "step"}
    assert at_finish["config"]["trainer"]["steps"] == 2 and at_finish["config"]["logger"]["kind"] == "wandb"
    rope = json.loads((tmp_path / "rope.json").read_text())
    assert at_finish["summary"]["rope/disturbance"] == rope["disturbance"]
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    assert (tmp_path / "wandb_id.txt").read_text().strip() in offline.name
    assert list(offline.glob("run-*.wandb"))


@pytest.mark.slow
def test_wandb_logger_runs_offline_without_an_api_key(tmp_path, data_cache):
    """The same through launch/train.py: wandb starts and finishes inside the entry point's process."""
    result = run_train(
        small_run(
            tmp_path,
            data_cache,
            "trainer.steps=2",
            "trainer.export=false",
            "logger=wandb",
            "logger.mode=offline",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert (tmp_path / "wandb_id.txt").read_text().strip() in runs[0].name


@pytest.mark.slow
def test_no_intact_checkpoint_is_a_one_line_error_before_the_model_loads(tmp_path, data_cache):
    from dprope.train import checkpoint

    path = checkpoint.checkpoint_root(tmp_path) / "step_00000001"
    path.mkdir(parents=True)
    (path / checkpoint.STATE_FILE).write_text('{"step": 1, "consumed_samples": 4, "world_size": 1}')
    (path / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * 64)
    checkpoint.write_manifest(path)
    (path / checkpoint.COMPLETE).write_text("")
    (path / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * 32)  # truncated
    result = run_train(small_run(tmp_path, data_cache, "trainer.steps=2"), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: trainer.resume: no intact checkpoint to resume from (step_00000001: ")
    assert "32 bytes, the manifest says 64" in lines[0]
    assert not (tmp_path / "config.yaml").exists()  # stopped before the data and the model


@pytest.mark.slow
def test_damaged_pinned_data_cache_is_a_one_line_error_before_the_model_loads(tmp_path, data_cache):
    import subprocess

    pinned = tmp_path / "prepared"
    overrides = small_run(
        tmp_path / "run", data_cache, "trainer.steps=2", "data.num_proc=1", f"data.cache_path={pinned}"
    )
    prepare = [sys.executable, str(ROOT / "launch" / "prepare_data.py"), *overrides]
    subprocess.run(prepare, cwd=ROOT, env=train_env(), check=True, capture_output=True, timeout=300)
    tokens = pinned / "tokens.bin"
    with open(tokens, "r+b") as handle:
        handle.truncate(tokens.stat().st_size - 10)
    result = run_train(overrides, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: data.cache_path: {pinned} is damaged: tokens.bin has"
    )
    assert not (tmp_path / "run" / "deepspeed_config.json").exists()
