"""Cached, resumable stages: each writes into its own directory and is marked done by a key.

A stage's key is everything its outputs depend on (its config and its upstream stages' digests),
hashed. ``STAGE.json`` records the key when the stage starts and ``DONE`` (written last,
atomically) when it finishes, with its summary and wall time. On a re-run:

- ``DONE`` with the same digest: the stage is skipped and its recorded summary returned;
- a directory started under another digest (the config changed): it is emptied and run again;
- a directory started under the same digest but not done (a killed run): the stage runs again
  in place, so a training stage resumes from its own checkpoints.

A stage that raises leaves every finished stage, and its own partial outputs, where they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DONE = "DONE"
STARTED = "STAGE.json"


class StageFailed(RuntimeError):
    """A stage raised or returned a failure; ``str`` is one line naming the stage."""

    def __init__(self, name: str, reason: str):
        self.stage = name
        super().__init__(f"stage {name} failed: {reason}")


def digest(key: Any) -> str:
    """A stable hash of a JSON-serialisable key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    name: str  # relative directory, e.g. "seed0/finetune/pi"
    key: dict[str, Any]  # what the outputs depend on (configs, upstream digests)
    run: Callable[[Path], dict[str, Any]]  # writes into the directory; returns a JSON summary

    @property
    def digest(self) -> str:
        return digest(self.key)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


class StageStore:
    """The run directory's stages."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def directory(self, stage: Stage) -> Path:
        return self.root / stage.name

    def finished(self, stage: Stage) -> dict[str, Any] | None:
        """The ``DONE`` record of ``stage`` when it finished under the same key, else None."""
        record = _read_json(self.directory(stage) / DONE)
        return record if record and record.get("digest") == stage.digest else None

    def run(self, stage: Stage) -> dict[str, Any]:
        """Run ``stage`` unless it finished under the same key; returns its ``DONE`` record."""
        record = self.finished(stage)
        if record is not None:
            log.info("stage %s: done already (%s), skipped", stage.name, stage.digest)
            record["skipped"] = True
            return record
        directory = self.directory(stage)
        started = _read_json(directory / STARTED)
        if directory.exists() and (started is None or started.get("digest") != stage.digest):
            log.info("stage %s: outputs of another configuration, starting over", stage.name)
            shutil.rmtree(directory)
        elif started is not None:
            log.info("stage %s: continuing an unfinished run", stage.name)
        directory.mkdir(parents=True, exist_ok=True)
        _write_json(directory / STARTED, {"name": stage.name, "digest": stage.digest, "key": stage.key})
        print(f"reproduce: stage {stage.name}", flush=True)
        start = time.perf_counter()
        try:
            summary = stage.run(directory)
        except StageFailed:
            raise
        except Exception as err:  # noqa: BLE001 (any failure of a stage is reported with its name)
            raise StageFailed(
                stage.name,
                f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
            ) from err
        record = {
            "name": stage.name,
            "digest": stage.digest,
            "elapsed_s": time.perf_counter() - start,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "summary": summary,
        }
        _write_json(directory / DONE, record)
        record["skipped"] = False
        return record
