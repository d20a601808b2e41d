"""RULER's samples, generated from a seed before the model loads.

Length rule (RULER's): a sample of length T leaves room for the task's generation length g.
The haystack size (in the task's unit) is searched once per task and length for the largest
prompt of at most T - g tokens (BOS included); each sample then starts from that size and
shrinks by the task's step until its own prompt fits, as RULER's generators do (the step is
capped at a quarter of the haystack, which lengths of 4096 and more never reach). A task whose
input file is not given is skipped, with a logged message.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from dprope.config import ConfigError
from dprope.eval.benchmarks.ruler.config import QA_FILES, RulerConfig
from dprope.eval.benchmarks.ruler.sources import read_hotpotqa, read_squad, read_words, words_from_data
from dprope.eval.benchmarks.ruler.tasks import TASKS, Materials, Slot
from dprope.eval.chat import encode_prompt
from dprope.eval.common import EvalContext, check_length

log = logging.getLogger(__name__)


@dataclass
class RulerSample:
    task: str
    length: int
    input_ids: list[int]
    answers: list[str]


@dataclass
class RulerData:
    samples: list[RulerSample]
    tasks: list[str]  # the tasks that run, in config order
    skipped: dict[str, str]  # task -> why it does not run


def essay_words(cfg: RulerConfig, data) -> list[str] | None:
    """The essay haystack: ``essay_file``, else ``essay_split`` of the data preset, else None."""
    if cfg.essay_file is not None:
        return read_words(cfg.essay_file, "eval.ruler.essay_file")
    if cfg.essay_split is None:
        return None
    if data is None:
        raise ConfigError("data", "eval.ruler.essay_split reads a data preset: choose one with data=<preset>")
    return words_from_data(data, cfg.essay_split, "eval.ruler.essay_split", 2 * max(cfg.lengths))


def load_materials(cfg: RulerConfig, tokenizer, data=None) -> tuple[Materials, dict[str, str]]:
    """Files the selected tasks need; a task whose file is not given is skipped (logged)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    materials, skipped = Materials(count), {}
    for task in cfg.tasks:
        if TASKS[task].needs != "essay":
            continue
        if cfg.essay_file is None and cfg.essay_split is None:
            skipped[task] = "neither eval.ruler.essay_file nor eval.ruler.essay_split given"
            log.warning(
                "RULER %s skipped: set eval.ruler.essay_file to a text file (the essay haystack)", task
            )
        elif materials.essay is None:
            materials.essay = essay_words(cfg, data)
    for task in cfg.tasks:
        dataset = TASKS[task].needs
        if dataset not in QA_FILES or dataset in materials.qa:
            continue
        name = QA_FILES[dataset]
        path = getattr(cfg, name)
        if path is None:
            skipped[task] = f"no eval.ruler.{name} given"
            log.warning(
                "RULER %s skipped: set eval.ruler.%s to a local %s file to run it", task, name, dataset
            )
            continue
        reader = read_squad if dataset == "squad" else read_hotpotqa
        qa = reader(path, f"eval.ruler.{name}")
        if cfg.num_samples > len(qa.questions):
            raise ConfigError(
                "eval.ruler.num_samples",
                f"{cfg.num_samples} exceeds the {len(qa.questions)} questions of {path} ({task})",
            )
        materials.qa[dataset] = qa
    return materials, skipped


def build_samples(
    task_name: str,
    length: int,
    cfg: RulerConfig,
    tokenizer,
    seed: int,
    materials: Materials,
    chat: bool = False,
) -> list[RulerSample]:
    """``cfg.num_samples`` prompts of ``task_name`` fitted to ``length``, drawn from ``seed``
    (with ``chat``, wrapped in the chat template and fitted with it)."""
    task = TASKS[task_name]
    budget = length - cfg.new_tokens(task_name)

    def no_room() -> ConfigError:
        return ConfigError(
            "eval.ruler.lengths",
            f"{length} leaves no room for a {task_name} prompt after {length - budget} generated tokens",
        )

    def render(sample_seed: str, units: int, slot: Slot) -> tuple[list[int], list[str]]:
        text, answers = task.prompt(random.Random(sample_seed), units, slot, materials)
        return encode_prompt(tokenizer, text, chat), answers

    probe = Slot(length, budget, 0)
    size = task.search(lambda n: len(render(f"{seed}-{task_name}-{length}-search", n, probe)[0]), probe)
    if size is None:
        raise no_room()
    samples = []
    for index in range(cfg.num_samples):
        slot, units, sample_seed = Slot(length, budget, index), size, f"{seed}-{task_name}-{length}-{index}"
        ids, answers = render(sample_seed, units, slot)
        while len(ids) > budget:
            if units <= task.fewest():
                raise no_room()
            # RULER's step; capped at a quarter of the haystack, which only short test lengths reach
            units = max(units - min(task.step(slot), max(1, units // 4)), task.fewest())
            ids, answers = render(sample_seed, units, slot)
        samples.append(RulerSample(task_name, length, ids, answers))
    return samples


def prepare_ruler(cfg: RulerConfig, tokenizer, ctx: EvalContext, data=None) -> RulerData:
    """Every sample of the tasks that can run; ``data`` (a DataConfig) serves ``essay_split``."""
    for length in cfg.lengths:
        check_length("eval.ruler.lengths", length, ctx)
    materials, skipped = load_materials(cfg, tokenizer, data)
    tasks = [t for t in cfg.tasks if t not in skipped]
    if not tasks:
        raise ConfigError(
            "eval.ruler.tasks", f"no task can run: {'; '.join(f'{t} ({w})' for t, w in skipped.items())}"
        )
    samples = [
        s
        for task in tasks
        for length in cfg.lengths
        for s in build_samples(task, length, cfg, tokenizer, ctx.seed, materials, ctx.chat_template)
    ]
    return RulerData(samples, tasks, skipped)
