"""Nothing read from a checkpoint runs code: a crafted pickle (a shell command run on unpickling)
in the RNG file or in DeepSpeed's own state files is refused and never executed, whether the
checkpoint's manifest vouches for it or there is no manifest; legitimate checkpoints, including
RNG files of the earlier format, still load."""

from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dprope.config import ConfigError
from dprope.train import checkpoint
from dprope.train.checkpoint import MANIFEST, checkpoint_root
from dprope.train.safe_load import (
    UnsafeCheckpointError,
    safe_globals,
    safe_load,
    safe_loading,
    unsafe_globals,
)
from tests.train.conftest import read_metrics, run_train, small_run


class Payload:
    """Unpickled, it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path, state: dict | None = None) -> None:
    """Replace a checkpoint file with one that runs the payload when unpickled unsafely."""
    torch.save({**(state or {}), "payload": Payload(marker)}, path)


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """The test's own check: the crafted file does run code under a plain `torch.load`."""
    marker = tmp_path / "ran"
    plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_an_rng_file_with_a_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    plant(tmp_path / "rng_rank0.pt", marker, {"torch": torch.get_rng_state()})
    with pytest.raises(UnsafeCheckpointError) as err:
        checkpoint.restore_rng(tmp_path, rank=0)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'rng_rank0.pt'}: posix.system is not plain weights")
    assert "\n" not in message


def test_deepspeeds_own_loader_is_weights_only_inside_safe_loading(tmp_path):
    """DeepSpeed's checkpoint engine asks for ``weights_only=False``; `safe_loading` (which
    `checkpoint.load` and the universal conversion run in) overrides it."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    marker = tmp_path / "ran"
    plant(tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker)
    with safe_loading(), pytest.raises(pickle.UnpicklingError):
        TorchCheckpointEngine().load(str(tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored after the block


def test_loads_nest_and_leave_the_processs_allow_list_as_it_was(tmp_path):
    """DeepSpeed's universal load reads an optimizer file (with its ZeroStageEnum) after the
    checkpoint engine's own weights-only load: the inner block must not drop the outer one's
    allow-list, and none of it outlives the outer block."""
    from deepspeed.runtime.zero.config import ZeroStageEnum

    torch.save({"zero_stage": ZeroStageEnum.weights}, tmp_path / "optimizer_state.pt")
    checkpoint._save_rng(tmp_path / "rng_rank0.pt")
    before = list(torch.serialization.get_safe_globals())
    ours = [g for g in safe_globals() if g not in before]  # what the blocks add
    assert ours
    with safe_loading():
        safe_load(tmp_path / "rng_rank0.pt")
        loaded = torch.load(tmp_path / "optimizer_state.pt", weights_only=False)  # forced weights-only
    assert loaded["zero_stage"] is ZeroStageEnum.weights
    after = torch.serialization.get_safe_globals()
    # torch modules imported during the block may register globals of their own (process-wide,
    # not ours); none of the blocks' own allow-list outlives them, and nothing there before is lost
    assert not [g for g in ours if g in after]
    assert all(g in after for g in before)


def test_a_checkpoint_naming_code_is_refused_before_anything_is_unpickled(tmp_path):
    marker = tmp_path / "ran"
    root = checkpoint_root(tmp_path)
    path = root / "step_00000002"
    path.mkdir(parents=True)
    (path / checkpoint.STATE_FILE).write_text('{"step": 2, "consumed_samples": 8, "world_size": 1}')
    plant(path / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker, {"x": torch.zeros(2)})
    checkpoint.write_manifest(path, alone=True)  # the manifest vouches for it: no signature
    (path / checkpoint.COMPLETE).write_text("")
    assert unsafe_globals(path) == [f"{path / 'zero_pp_rank_0_mp_rank_00_optim_states.pt'}: posix.system"]
    with pytest.raises(ConfigError) as err:
        checkpoint.choose_resume(checkpoint.resume_candidates("auto", tmp_path), world_size=1, rank=0)
    assert str(err.value).startswith(f"trainer.resume: refusing checkpoint {path}: ")
    assert "posix.system" in str(err.value) and not marker.exists()


def test_rng_files_of_the_new_and_the_earlier_format_restore_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint._save_rng(tmp_path / "rng_rank0.pt")
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    assert unsafe_globals(tmp_path) == []  # tensors, numbers and tuples only
    checkpoint.restore_rng(tmp_path, rank=0)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    random.seed(4), np.random.seed(5), torch.manual_seed(6)
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(state, earlier / "rng_rank0.pt")  # numpy's state as arrays, as earlier versions wrote
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    checkpoint.restore_rng(earlier, rank=0)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory, data_cache) -> Path:
    out = tmp_path_factory.mktemp("two-steps")
    result = run_train(
        small_run(out, data_cache, "trainer.steps=2", "trainer.save_every=2", "trainer.export=false")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    step = checkpoint_root(out) / "step_00000002"
    assert unsafe_globals(step) == []  # what DeepSpeed and the trainer write passes the allow-list
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "file,manifest",
    [
        ("rng_rank0.pt", "rewritten"),
        ("rng_rank0.pt", "removed"),
        ("zero_pp_rank_0_mp_rank_00_optim_states.pt", "rewritten"),
        ("zero_pp_rank_0_mp_rank_00_model_states.pt", "removed"),
    ],
)
def test_a_crafted_checkpoint_never_runs_its_payload_on_resume(
    two_steps, tmp_path, data_cache, file, manifest
):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    step = checkpoint_root(out) / "step_00000002"
    marker = tmp_path / "ran"
    plant(step / file, marker, {"module": {}, "torch": torch.get_rng_state()})
    if manifest == "rewritten":  # a CRC manifest is no signature: anyone can write one
        checkpoint.write_manifest(step, alone=True)
    else:  # loaded "unverified"
        (step / MANIFEST).unlink()
    result = run_train(small_run(out, data_cache, "trainer.steps=4", "trainer.export=false"), timeout=300)
    assert not marker.exists(), "the checkpoint's payload ran"
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(
        f"error: trainer.resume: refusing checkpoint {step}: {step / file}: posix.system"
    )
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
