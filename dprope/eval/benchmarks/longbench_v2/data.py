"""LongBench v2's data, read and checked before the model loads: the official ``data.json``
(THUDM/LongBench-v2, what the official ``pred.py`` loads), every record with its ``_id``,
``domain``, ``sub_domain``, ``difficulty`` (easy | hard), ``length`` (short | medium | long),
``question``, ``choice_A`` to ``choice_D``, ``answer`` (A-D) and ``context``.

Official protocol: the prompt is the official zero-shot template (``prompts/0shot.txt``) filled as
``pred.py`` fills it (context, question and choices stripped, placeholders replaced in its order);
a prompt of more than the budget's tokens keeps its first and last halves (official: on the
token ids of the prompt, decoded back to text). The decoded text is checked once more and cut a
little further if it re-tokenizes longer, so lm-eval never has to cut it from the left. lm_eval
protocol: the documents get lm-eval's ``choices`` list and lm-eval's task does the rest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.config import ConfigError
from dprope.eval.benchmarks.longbench_v2.config import EXPECTED_FILE, LongBenchV2Config
from dprope.eval.common import EvalContext, check_length

FIELD = "eval.longbench_v2.data_file"
LETTERS = ("A", "B", "C", "D")
VALUES = {"difficulty": ("easy", "hard"), "length": ("short", "medium", "long"), "answer": LETTERS}
TEXT_FIELDS = ("_id", "domain", "sub_domain", "question", *(f"choice_{x}" for x in LETTERS), "context")

# The official zero-shot template (prompts/0shot.txt), placeholders as the official pred.py names them.
TEMPLATE = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)


@dataclass
class LongBenchV2Data:
    docs: list[dict[str, Any]]  # the documents handed to lm-eval, in file order
    contexts: dict[str, str]  # _id -> the first 1000 characters of the context (official prediction files)
    budget: int | None  # official protocol: the prompt budget in tokens; None for lm_eval
    truncated: int  # official protocol: prompts cut in the middle


def read_records(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The records of ``path``: a JSON list (the official data.json) or one JSON object per line."""
    file = Path(path).expanduser()
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, list):
        data = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(
                    FIELD, f"{file}:{lineno}: not valid JSON ({err.msg}; expected {EXPECTED_FILE})"
                ) from None
    if not data:
        raise ConfigError(FIELD, f"{file} holds no question (expected {EXPECTED_FILE})")
    records = [validate_record(r, f"{file}[{i}]") for i, r in enumerate(data)]
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        if record["_id"] in seen:
            raise ConfigError(
                FIELD, f"{file}[{i}]: _id {record['_id']!r} repeats record {seen[record['_id']]}"
            )
        seen[record["_id"]] = i
    return records[:limit] if limit is not None else records


def validate_record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise ConfigError(FIELD, f"{where}: expected a JSON object")
    for key in (*TEXT_FIELDS, *VALUES):
        if not isinstance(record.get(key), str):
            raise ConfigError(FIELD, f"{where}: field {key!r} must be a string")
    for key, allowed in VALUES.items():
        if record[key] not in allowed:
            raise ConfigError(
                FIELD, f"{where}: field {key!r} must be one of {', '.join(allowed)} (got {record[key]!r})"
            )
    return {key: record[key] for key in (*TEXT_FIELDS, *VALUES)}


def official_prompt(record: Mapping[str, str]) -> str:
    """The zero-shot prompt as the official pred.py builds it (its replacement order kept)."""
    prompt = TEMPLATE.replace("$DOC$", record["context"].strip()).replace("$Q$", record["question"].strip())
    for letter in LETTERS:
        prompt = prompt.replace(f"$C_{letter}$", record[f"choice_{letter}"].strip())
    return prompt


def truncate_middle(tokenizer, prompt: str, budget: int) -> tuple[str, bool]:
    """``prompt`` within ``budget`` tokens (BOS included): its first budget//2 and last
    budget - budget//2 token ids, decoded (official pred.py); cut by one more token on each side
    while the decoded text re-tokenizes longer."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if len(ids) <= budget:
        return prompt, False
    keep = budget
    while True:
        head = keep // 2
        text = tokenizer.decode(ids[:head] + ids[len(ids) - (keep - head) :], skip_special_tokens=True)
        if len(tokenizer(text, add_special_tokens=True)["input_ids"]) <= budget or keep <= 2:
            return text, True
        keep -= 2


def prompt_budget(cfg: LongBenchV2Config, ctx: EvalContext) -> int:
    """The prompt budget: ``max_prompt_tokens``, else the context lm-eval uses minus the answer."""
    context = cfg.max_length or ctx.max_positions
    budget = cfg.max_prompt_tokens or context - cfg.max_new_tokens
    if budget < 1:
        raise ConfigError(
            "eval.longbench_v2.max_new_tokens", f"leaves no prompt budget in a context of {context}"
        )
    check_length("eval.longbench_v2.max_prompt_tokens", budget + cfg.max_new_tokens, ctx)
    return budget


def prepare_longbench_v2(cfg: LongBenchV2Config, tokenizer, ctx: EvalContext) -> LongBenchV2Data:
    """Read and check the data file, then build the documents of the chosen protocol."""
    if cfg.data_file is None:
        raise ConfigError(FIELD, f"not set: no LongBench v2 data (expected {EXPECTED_FILE})")
    if cfg.max_length is not None:
        check_length("eval.longbench_v2.max_length", cfg.max_length, ctx)
    records = read_records(cfg.data_file, cfg.limit)
    contexts = {r["_id"]: r["context"][:1000] for r in records}
    if cfg.protocol == "lm_eval":  # lm-eval's own task reads `choices`
        docs = [{**r, "choices": [r[f"choice_{x}"] for x in LETTERS]} for r in records]
        return LongBenchV2Data(docs, contexts, None, 0)
    budget = prompt_budget(cfg, ctx)
    docs, truncated = [], 0
    for record in records:
        prompt, cut = truncate_middle(tokenizer, official_prompt(record), budget)
        truncated += cut
        docs.append({**{k: v for k, v in record.items() if k != "context"}, "prompt": prompt})
    return LongBenchV2Data(docs, contexts, budget, truncated)
