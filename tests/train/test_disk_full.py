"""A disk that fills up during a checkpoint save, the export or a data cache build: one line naming
the file and what is kept, a non-zero exit, the partial directory removed, and the same command
succeeding once there is room.

The full disk is real: each run happens in a private mount namespace (``unshare -Urm``, no root
needed where unprivileged user namespaces are allowed) on a small tmpfs, so the writes fail with
the kernel's ENOSPC. Where namespaces are not available the tests are skipped."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dprope.train.checkpoint import checkpoint_root
from dprope.train.config import EXIT_SAVE_FAILED
from tests.train.conftest import ROOT, TRAIN, read_metrics, small_run, train_env


def namespaces_available() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not namespaces_available(), reason="needs unshare -Urm (user and mount namespaces) for a small tmpfs"
    ),
]


def in_namespace(tmp_path: Path, script: str) -> None:
    """Run a bash script in a private mount namespace (its tmpfs mounts vanish with it)."""
    result = subprocess.run(
        ["unshare", "-Urm", "bash", "-c", "set -u\n" + script],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def train_command(tag: str, tmp_path: Path, overrides: list[str]) -> str:
    """A `launch/train.py` run whose stdout, stderr and exit code land in ``tmp_path/<tag>.*``."""
    args = " ".join(shlex.quote(a) for a in [sys.executable, str(TRAIN), *overrides])
    return f"{args} > {tmp_path}/{tag}.out 2> {tmp_path}/{tag}.err; echo $? > {tmp_path}/{tag}.rc\n"


def outcome(tmp_path: Path, tag: str) -> tuple[int, list[str], str]:
    """(exit code, stderr lines, stdout and stderr) of a run of `train_command`."""
    err = (tmp_path / f"{tag}.err").read_text()
    return (
        int((tmp_path / f"{tag}.rc").read_text()),
        err.strip().splitlines(),
        (tmp_path / f"{tag}.out").read_text() + err,
    )


def test_full_disk_during_a_checkpoint_save(tmp_path, data_cache):
    out = tmp_path / "run"
    root = checkpoint_root(out)
    overrides = small_run(out, data_cache, "trainer.steps=3", "trainer.save_every=1", "trainer.export=false")
    # 2.2 MB hold one tiny-model checkpoint (about 1.5 MB) but not two
    script = (
        f"mkdir -p {root} && mount -t tmpfs -o size=2200k tmpfs {root}\n"
        + train_command("full", tmp_path, overrides)
        + f"ls -a {root} > {tmp_path}/listing; cat {root}/latest > {tmp_path}/latest\n"
        + f"mount -o remount,size=20m {root}\n"
        + train_command("room", tmp_path, overrides)
    )
    in_namespace(tmp_path, script)
    code, lines, _ = outcome(tmp_path, "full")
    assert code == EXIT_SAVE_FAILED
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [
        f"error: no space left on device writing {root / 'step_00000002' / 'zero_pp_rank_0_mp_rank_00_optim_states.pt'}; "
        "checkpoint step_00000001 is kept"
    ], "\n".join(lines[-20:])
    assert "Traceback" not in "\n".join(lines)
    listing = (tmp_path / "listing").read_text().split()
    assert "step_00000001" in listing and "step_00000002" not in listing  # the partial one removed
    assert (tmp_path / "latest").read_text() == "step_00000001"
    code, lines, console = outcome(tmp_path, "room")
    assert code == 0, "\n".join(lines[-20:])
    assert "step_00000001 at step 1" in console
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]


def test_full_disk_during_the_export(tmp_path, data_cache):
    out = tmp_path / "run"
    root = checkpoint_root(out)
    overrides = small_run(out, data_cache, "trainer.steps=2", "trainer.save_every=2")
    # the run directory on 256 kB (the 460 kB of weights do not fit), its checkpoints on 20 MB
    script = (
        f"mkdir -p {out} && mount -t tmpfs -o size=256k tmpfs {out}\n"
        + f"mkdir -p {root} && mount -t tmpfs -o size=20m tmpfs {root}\n"
        + train_command("full", tmp_path, overrides)
        + f"ls -a {out} > {tmp_path}/listing\n"
        + f"mount -o remount,size=4m {out}\n"
        + train_command("room", tmp_path, overrides)
        + f"ls {out / 'hf'} > {tmp_path}/export\n"
    )
    in_namespace(tmp_path, script)
    code, lines, _ = outcome(tmp_path, "full")
    assert code == EXIT_SAVE_FAILED
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [
        f"error: no space left on device writing {out / '.hf.tmp' / 'model*.safetensors'}; no export was written; "
        "checkpoint step_00000002 is kept: run the same command again (trainer.resume=auto) once there is "
        "room, and it exports"
    ], "\n".join(lines[-20:])
    assert "Traceback" not in "\n".join(lines)
    listing = (tmp_path / "listing").read_text().split()
    assert ".hf.tmp" not in listing and "hf" not in listing
    code, lines, console = outcome(tmp_path, "room")
    assert code == 0, "\n".join(lines[-20:])
    assert "step_00000002 at step 2" in console
    assert "model.safetensors" in (tmp_path / "export").read_text().split()


def test_full_disk_during_a_data_cache_build(tmp_path, data_cache):
    cache = tmp_path / "cache"
    overrides = small_run(tmp_path / "run", cache, "trainer.steps=2", "data.num_proc=1")
    prepare = " ".join(
        shlex.quote(a) for a in [sys.executable, str(ROOT / "launch" / "prepare_data.py"), *overrides]
    )
    script = (
        f"mkdir -p {cache} && mount -t tmpfs -o size=64k tmpfs {cache}\n"
        + f"{prepare} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc\n"
        + f"ls -a {cache} > {tmp_path}/listing\n"
    )
    in_namespace(tmp_path, script)
    code, lines, _ = outcome(tmp_path, "full")
    assert code == 2
    assert len(lines) == 1, "\n".join(lines[-20:])
    assert lines[0].startswith(
        f"error: data.cache_dir: no space left on device writing {cache}/.embedded-train-256-"
    )
    assert lines[0].endswith(
        "/tokens.bin; the partial cache was removed (free space, or point data.cache_dir at a larger disk)"
    )
    assert not [name for name in (tmp_path / "listing").read_text().split() if ".partial-" in name]
