"""Whether the hub datasets of lm-eval tasks can be had, checked before the model loads.

lm-eval reads most of its tasks' data from the Hugging Face hub when a task is built, after the
model has loaded. Without a network that ends in the hub client's retries and a long traceback.
Here, before the model loads: with ``HF_HUB_OFFLINE`` unset the hub must answer within a few
seconds (lm-eval then downloads what it needs); offline (``HF_HUB_OFFLINE=1``) every hub dataset
of every selected task must already be in the `datasets` cache, as `datasets` itself resolves it
offline (`datasets.load_dataset_builder`, which reads the cache only). Either failure is one
`ConfigError` naming the task, its dataset and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line

PROBE_TIMEOUT_S = 5.0


def offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub's endpoint does not answer within ``timeout`` seconds, or None when it does."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as err:  # DNS, refused, timeout, proxy: any of them means no hub here
        return f"{constants.ENDPOINT}: {first_line(err, with_type=True)}"
    return None


def hub_datasets(manager, name: str) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(dataset_path, dataset_name, dataset_kwargs) of every task that the lm-eval task, group or
    tag ``name`` stands for, from the task index (no task is built, nothing is downloaded); tasks
    that read local files or a packaged builder (``json``, ``csv``, ...) are left out."""
    index = manager.task_index
    seen: set[str] = set()

    def walk(cfg: dict[str, Any], overrides: dict[str, Any]) -> Iterator[tuple[str, str | None, dict]]:
        members = cfg.get("task")
        if isinstance(members, list):  # a group: its members, with the group's overrides
            inherited = {k: v for k, v in cfg.items() if k.startswith("dataset_")}
            for member in members:
                yield from member_datasets(member, {**overrides, **inherited})
            return
        merged = {**cfg, **overrides}
        path = merged.get("dataset_path")
        if isinstance(path, str) and _is_hub_id(path):
            yield path, merged.get("dataset_name"), dict(merged.get("dataset_kwargs") or {})

    def member_datasets(member: Any, overrides: dict[str, Any]) -> Iterator[tuple[str, str | None, dict]]:
        if isinstance(member, str):
            yield from entry_datasets(member, overrides)
        elif isinstance(member, dict):
            reference = member.get("group", member.get("task"))
            own = {k: v for k, v in member.items() if k not in ("group", "task")}
            if isinstance(reference, str) and reference in index:
                yield from entry_datasets(reference, {**overrides, **own})
            else:  # an inline task or group, defined where it is listed
                yield from walk(member, overrides)

    def entry_datasets(key: str, overrides: dict[str, Any]) -> Iterator[tuple[str, str | None, dict]]:
        entry = index.get(key)
        if entry is None or (key in seen and not overrides):
            return
        seen.add(key)
        if entry.kind.name == "TAG":  # a tag: the tasks it names
            for task in sorted(entry.tags):
                yield from entry_datasets(task, overrides)
        elif entry.cfg:
            yield from walk(entry.cfg, overrides)

    yield from entry_datasets(name, {})


def _is_hub_id(path: str) -> bool:
    """A dataset path that names a hub repository: not a packaged builder, not a local path."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return path not in _PACKAGED_DATASETS_MODULES and not Path(path).expanduser().exists()


def cached(path: str, name: str | None, kwargs: dict[str, Any]) -> str | None:
    """None when `datasets` finds ``path`` (config ``name``) in its cache offline, else why not."""
    import datasets

    options = {k: kwargs[k] for k in ("data_dir", "data_files", "revision") if k in kwargs}
    try:
        datasets.load_dataset_builder(path, name, **options)
    except Exception as err:  # not cached (FileNotFoundError, ValueError, ...): say what datasets said
        return first_line(err)
    return None


def check_task_data(manager, tasks: list[str], field_name: str) -> None:
    """Every hub dataset of ``tasks`` can be had (see the module docstring); ``field_name`` is the
    config's place of the task list (``eval.open_llm.tasks``), for the errors."""
    needs = {i: list(hub_datasets(manager, name)) for i, name in enumerate(tasks)}
    first = next((i for i, found in needs.items() if found), None)
    if first is None:
        return
    if not offline_mode():
        reason = hub_unreachable()
        if reason is None:
            return  # lm-eval downloads what is missing
        path = needs[first][0][0]
        raise ConfigError(
            f"{field_name}[{first}].name",
            f"{tasks[first]} reads {path} from the Hugging Face hub, which cannot be reached ({reason}); "
            "run where it can, or set HF_HUB_OFFLINE=1 to use the datasets already in the cache",
        )
    import datasets

    for i, found in needs.items():
        for path, name, kwargs in found:
            missing = cached(path, name, kwargs)
            if missing is not None:
                which = f"{path} ({name})" if name else path
                raise ConfigError(
                    f"{field_name}[{i}].name",
                    f"{tasks[i]} reads {which}, which is not in the datasets cache "
                    f"({datasets.config.HF_DATASETS_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it "
                    f"({missing})",
                )
