"""RULER: the 13 tasks' prompts against the official generator's fixed parts, length fitting,
the per-task metrics on hand-checked strings, oracle and wrong predictions through the scoring
path, input files, and an end-to-end run on the tiny model whose answers are controlled, so that
the score grid is known."""

from __future__ import annotations

import json
import logging
import re

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.ruler.config import RulerConfig
from dprope.eval.benchmarks.ruler.data import prepare_ruler
from dprope.eval.benchmarks.ruler.scoring import (
    clean_prediction,
    score,
    score_ruler,
    string_match_all,
    string_match_part,
)
from dprope.eval.benchmarks.ruler.sources import english_words, key_parts, split_sentences
from dprope.eval.benchmarks.ruler.tasks import NOISE, TASKS, largest_fitting, listed
from dprope.eval.common import EvalContext

LENGTH = 3000  # below 4096: RULER's short-length variants (CWE frequencies, steps of 5)
CTX = EvalContext(max_positions=16384, progress=False)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
NIAH_HEAD = {
    True: "A special magic {k} is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {k} afterwards.\n",
    False: "Some special magic {k}s are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {k}s afterwards.\n",
}
NIAH_TAIL = {
    True: "\nWhat is the special magic {k} for {q} mentioned in the provided text? "
    "The special magic {k} for {q} mentioned in the provided text is",
    False: "\nWhat are all the special magic {k}s for {q} mentioned in the provided text? "
    "The special magic {k}s for {q} mentioned in the provided text are",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An essay text, a SQuAD 2.0 file and a HotpotQA file, in the official formats."""
    path = tmp_path_factory.mktemp("ruler")
    sentences = [f"Essay sentence {i} is about startups, and Mr. Smith wrote it. Really!" for i in range(300)]
    (path / "essay.txt").write_text("\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, 300, 5)))
    articles = [
        {
            "title": f"Land {a}",
            "paragraphs": [
                {
                    "context": f"Land {a} part {p}: its river number {p} is named Alder{a}x{p}.",
                    "qas": [
                        {
                            "question": f"What is river {p} of land {a} named?",
                            "answers": [{"text": f"Alder{a}x{p}"}, {"text": f"the Alder{a}x{p}"}],
                            "is_impossible": False,
                        },
                        {"question": "Unanswerable?", "answers": [], "is_impossible": True},
                    ],
                }
                for p in range(3)
            ],
        }
        for a in range(10)
    ]
    (path / "squad.json").write_text(json.dumps({"version": "v2.0", "data": articles}))
    hotpot = [
        {
            "question": f"Who founded firm {j}?",
            "answer": f"Founder{j}",
            "context": [
                [f"Firm {j}", [f"Firm {j} was founded by Founder{j}.", " It is old."]],
                ["Other", ["Text."]],
            ],
        }
        for j in range(20)
    ]
    (path / "hotpotqa.json").write_text(json.dumps(hotpot))
    return {name: str(path / f"{name}.json") for name in ("squad", "hotpotqa")} | {
        "essay": str(path / "essay.txt")
    }


def config(files, **overrides) -> RulerConfig:
    settings = {
        "lengths": [LENGTH],
        "num_samples": 2,
        "essay_file": files["essay"],
        "squad_file": files["squad"],
        "hotpotqa_file": files["hotpotqa"],
    }
    return RulerConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def prepared(files, byte_tokenizer):
    return prepare_ruler(config(files), byte_tokenizer, CTX)


def prompts(prepared, byte_tokenizer, task):
    return [
        (byte_tokenizer.decode(s.input_ids, skip_special_tokens=True), s)
        for s in prepared.samples
        if s.task == task
    ]


def test_the_task_set_is_rulers():
    assert list(TASKS) == [
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2",
    ]  # fmt: skip
    assert RulerConfig().tasks == list(TASKS) and RulerConfig().num_samples == 500
    generation = {t: TASKS[t].max_new_tokens for t in TASKS}
    assert generation == {
        **dict.fromkeys(list(TASKS)[:8], 128),
        "vt": 30,
        "cwe": 120,
        "fwe": 50,
        "qa_1": 32,
        "qa_2": 32,
    }


@pytest.mark.parametrize("task", list(TASKS))
def test_every_prompt_fits_its_budget_and_holds_its_answers(prepared, byte_tokenizer, task):
    budget = LENGTH - TASKS[task].max_new_tokens
    cases = prompts(prepared, byte_tokenizer, task)
    assert len(cases) == 2
    for text, sample in cases:
        assert budget // 2 < len(sample.input_ids) <= budget
        assert sample.input_ids[0] == byte_tokenizer.bos_token_id
        found = [a in text for a in sample.answers]
        assert sample.answers and (any(found) if TASKS[task].metric == "part" else all(found))


def _key_is_adjective_noun(key: str) -> bool:
    adjectives, nouns = key_parts()
    cuts = [i for i, c in enumerate(key) if c == "-"]  # words may hold hyphens themselves
    return any(key[:i] in adjectives and key[i + 1 :] in nouns for i in cuts)


NIAH_SHAPE = {  # task: (values asked, needles in the prompt, value pattern, key is a uuid, haystack)
    "niah_single_1": (1, 1, r"\d{7}", False, "noise"),
    "niah_single_2": (1, 1, r"\d{7}", False, "essay"),
    "niah_single_3": (1, 1, UUID, False, "essay"),
    "niah_multikey_1": (1, 4, r"\d{7}", False, "essay"),
    "niah_multikey_2": (1, None, r"\d{7}", False, "needle"),
    "niah_multikey_3": (1, None, UUID, True, "needle"),
    "niah_multivalue": (4, 4, r"\d{7}", False, "essay"),
    "niah_multiquery": (4, 4, r"\d{7}", False, "essay"),
}


@pytest.mark.parametrize("task", list(NIAH_SHAPE))
def test_niah_prompts_as_rulers(prepared, byte_tokenizer, task):
    asked, needles, value, uuid_key, haystack = NIAH_SHAPE[task]
    singular = asked == 1
    kind = "uuid" if value == UUID else "number"
    key = UUID if uuid_key else r"[^\n]+?"
    needle = re.compile(rf"One of the special magic {kind}s for ({key}) is: ({value})\.")
    for text, sample in prompts(prepared, byte_tokenizer, task):
        found = needle.findall(text)
        queried = {k for k, v in found if v in sample.answers}
        query = re.search(r"\nWhat (?:is|are all) the special magic \w+ for (.+?) mentioned in", text).group(
            1
        )
        assert set(query.split(", and ")[-1:] + query.split(", and ")[0].split(", ")) == queried
        assert text.startswith(NIAH_HEAD[singular].format(k=kind))
        assert text.endswith(NIAH_TAIL[singular].format(k=kind, q=query))
        assert len(sample.answers) == asked and all(re.fullmatch(value, a) for a in sample.answers)
        if needles is not None:
            assert len(found) == needles
        if task == "niah_multiquery":
            assert query.count(", ") == 3 and ", and " in query  # "a, b, c, and d"
        if not uuid_key:
            assert all(_key_is_adjective_noun(k) for k, _ in found)
        context = text[len(NIAH_HEAD[singular].format(k=kind)) : text.index("\nWhat ")]
        if haystack == "noise":  # five-sentence blocks, one per line, and the needle on its own line
            assert set(context.split("\n")) == {NOISE, *(m.group(0) for m in needle.finditer(text))}
        elif haystack == "needle":  # every line a needle; the one asked for appears once
            assert all(needle.fullmatch(line) for line in context.split("\n"))
            assert sum(v == sample.answers[0] for _, v in found) == 1
        else:
            assert "Essay sentence" in context and "\n" not in context


def test_vt_prompt_as_rulers(prepared, byte_tokenizer):
    head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    for text, sample in prompts(prepared, byte_tokenizer, "vt"):
        example, task = text.split("\n\n" + head)
        value = re.search(r"assigned the value (\d{5}) in the text above", task).group(1)
        assert text.startswith(head) and task.endswith(
            f"\nQuestion: Find all variables that are assigned the value {value} in the text above. Answer: "
            f"According to the chain(s) of variable assignment in the text above, 5 variables are assigned the "
            f"value {value}, they are: "
        )
        for part, name in ((example, "[A-Z]{3}"), (task, "[A-Z]{5}")):  # the worked example: 3-letter names
            lines = part.split("\n")
            first = [line for line in lines if re.fullmatch(rf"VAR {name} = \d{{5}}", line)]
            hops = [
                line for line in lines if re.fullmatch(rf"VAR {name} = VAR {name} ", line)
            ]  # trailing space
            assert len(first) == 1 and len(hops) == 4
            assert lines.count(NOISE) >= 5 and not any(line.endswith(".") and "VAR" in line for line in lines)
        answer = re.search(r"they are:  ([A-Z]{3}(?: [A-Z]{3}){4})$", example)  # RULER's double space
        assert answer is not None
        assert sample.answers == re.findall(r"VAR ([A-Z]{5}) =", task)  # the chain, in order


def test_cwe_prompt_as_rulers(files, prepared, byte_tokenizer):
    question = (
        "\nQuestion: What are the 10 most common words in the above list? Answer: The top 10 words that appear "
        "most often in the list are:"
    )
    head = (
        "Below is a numbered list of words. In these words, some appear more often than others. "
        "Memorize the ones that appear most often.\n"
    )
    pool = set(english_words())

    def listing(part):
        items = re.split(r"(?:^| )\d+\. ", part)[1:]
        return [w for w in items if w]

    for text, sample in prompts(prepared, byte_tokenizer, "cwe"):
        example, task = text.split("\n" + head)
        example_list, example_answer = example[len(head) :].split(question)
        words = listing(example_list)
        assert text.startswith(head) and task.endswith(question)
        assert len(set(words)) == 20 and len(words) == 10 * 3 + 10 * 1  # below 4096: 20 words, 3 and 1 times
        answered = listing(example_answer.strip())
        assert example_answer == " " + " ".join(f"{i + 1}. {w}" for i, w in enumerate(answered))
        assert set(answered) == {w for w in words if words.count(w) == 3}  # the example's answer follows it
        main = listing(task[: -len(question)])
        assert len(sample.answers) == 10 and all(main.count(w) == 6 for w in sample.answers)  # below 4096: 6
        assert all(main.count(w) == 1 for w in set(main) - set(sample.answers))
        assert set(main) | set(words) <= pool
        numbers = re.findall(r"(?:^| )(\d+)\. ", task[: -len(question)])  # numbered, space-separated
        assert numbers == [str(i + 1) for i in range(len(main))] and "\n" not in task[: -len(question)]
    long = prepare_ruler(config(files, tasks=["cwe"], lengths=[9000], num_samples=1), byte_tokenizer, CTX)
    text = byte_tokenizer.decode(long.samples[0].input_ids, skip_special_tokens=True)
    example, task = text.split("\n" + head)
    words = listing(example[len(head) :].split(question)[0])
    assert len(set(words)) == 40 and len(words) == 10 * 10 + 30 * 3  # from 4096: 40 words, 10 and 3 times
    main = listing(task[: -len(question)])
    assert all(main.count(w) == 30 for w in long.samples[0].answers)
    assert all(main.count(w) == 3 for w in set(main) - set(long.samples[0].answers))


def test_fwe_prompt_as_rulers(prepared, byte_tokenizer):
    for text, sample in prompts(prepared, byte_tokenizer, "fwe"):
        assert text.startswith(
            "Read the following coded text and track the frequency of each coded word. Find the three most "
            "frequently appeared coded words. "
        )
        assert text.endswith(
            "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most "
            "frequently appeared words in the above coded text? Answer: According to the coded text above, the "
            "three most frequently appeared words are:"
        )
        words = text.split("coded words. ", 1)[1].split("\nQuestion:")[0].split(" ")
        counts = {w: words.count(w) for w in set(words)}
        ranked = sorted(counts, key=counts.get, reverse=True)
        assert ranked[0] == "..." and sample.answers == ranked[1:4]
        assert all(re.fullmatch("[a-z]{6}", w) for w in ranked[1:])
        # Zipf with alpha 2: rank k appears floor(n / (k^2 zeta(2))) times, zeta(2) = pi^2 / 6
        n = (
            counts["..."] * 1.6449340668
        )  # floor(n / zeta(2)) = count of rank 1, so n is within zeta(2) of this
        assert counts[ranked[1]] in (int(n / 4 / 1.6449340668), int((n + 1.65) / 4 / 1.6449340668))


def test_qa_prompts_as_rulers(prepared, byte_tokenizer):
    instruction = "Answer the question based on the given documents. Only give me the answer and do not output any other words."
    for task, gold in (
        ("qa_1", "Land 0 part {i}: its river number {i} is named Alder0x{i}."),
        ("qa_2", "Firm {i}\nFirm {i} was founded by Founder{i}. It is old."),
    ):
        for i, (text, _) in enumerate(prompts(prepared, byte_tokenizer, task)):
            assert text.startswith(f"{instruction}\n\nThe following are given documents.\n\nDocument 1:\n")
            assert gold.format(i=i) in text  # sample i asks question i of the file, its document included
            docs = re.findall(r"Document (\d+):\n", text)
            assert docs == [str(k + 1) for k in range(len(docs))] and len(docs) > 5
            assert re.search(rf"\n\n{instruction}\n\nQuestion: [^\n]+\? Answer:$", text)
    squad = [s.answers for s in prepared.samples if s.task == "qa_1"]
    assert squad == [
        ["Alder0x0", "the Alder0x0"],
        ["Alder0x1", "the Alder0x1"],
    ]  # every answer, impossible ones skipped


def test_scorers_on_fixed_strings():
    # string_match_all: share of references in the prediction, case-insensitive
    assert string_match_all("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 1.0
    assert string_match_all("only 1234567", ["1234567", "7654321", "1111111", "2222222"]) == 0.25
    assert string_match_all("abcde, FGHIJ", ["ABCDE", "fghij", "klmno"]) == pytest.approx(2 / 3)
    # string_match_part: one reference is enough
    assert string_match_part("It is the Alder river", ["Alder", "the Brill"]) == 1.0
    assert string_match_part("Brill", ["Alder", "the Brill"]) == 0.0
    # RULER's post-processing: strip, control characters become newlines
    assert clean_prediction("  \x00 42\x07x \t") == "42\nx"
    assert score("qa_1", "  the answer is PARIS\n", ["Paris", "Lyon"]) == 1.0
    assert score("niah_multivalue", "1, 2", ["1", "2", "3", "4"]) == 0.5
    assert score("qa_2", "Lyon", ["Paris"]) == 0.0


def test_oracle_scores_100_and_wrong_scores_0(files, prepared):
    cfg = config(files)
    oracle = [
        ", ".join(s.answers) if s.task not in ("qa_1", "qa_2") else s.answers[-1] for s in prepared.samples
    ]
    result = score_ruler(cfg, prepared, oracle)
    assert result.summary == {str(LENGTH): 100.0, "avg": 100.0}
    assert (
        all(v == {str(LENGTH): 100.0} for v in result.details["scores"].values())
        and len(result.details["scores"]) == 13
    )
    wrong = score_ruler(cfg, prepared, ["I do not know."] * len(prepared.samples))
    assert wrong.summary == {str(LENGTH): 0.0, "avg": 0.0}
    half = [", ".join(s.answers) if i % 2 == 0 else "" for i, s in enumerate(prepared.samples)]
    halves = score_ruler(cfg, prepared, half)
    assert halves.summary["avg"] == 50.0  # 2 samples per task, one right
    assert halves.details["nulls"]["vt"] == {str(LENGTH): "1/2"} and wrong.details["nulls"]["vt"] == {
        str(LENGTH): "0/2"
    }


def test_same_seed_same_samples(files, byte_tokenizer):
    cfg = config(files, tasks=["niah_multikey_2", "vt", "qa_2"])
    first = prepare_ruler(cfg, byte_tokenizer, CTX)
    again = prepare_ruler(cfg, byte_tokenizer, CTX)
    other = prepare_ruler(cfg, byte_tokenizer, EvalContext(max_positions=16384, seed=7))
    assert [s.input_ids for s in first.samples] == [s.input_ids for s in again.samples]
    assert [s.input_ids for s in first.samples] != [s.input_ids for s in other.samples]


def test_missing_inputs_skip_with_a_message(files, byte_tokenizer, caplog):
    cfg = RulerConfig(
        tasks=["niah_single_1", "niah_single_2", "qa_1", "qa_2"], lengths=[LENGTH], num_samples=1
    )
    with caplog.at_level(logging.WARNING):
        data = prepare_ruler(cfg, byte_tokenizer, CTX)
    assert data.tasks == ["niah_single_1"] and set(data.skipped) == {"niah_single_2", "qa_1", "qa_2"}
    assert "qa_1 skipped: set eval.ruler.squad_file" in caplog.text
    result = score_ruler(cfg, data, [""])
    assert (
        "Skipped: niah_single_2 (neither eval.ruler.essay_file" in result.markdown
        and result.details["skipped"] == data.skipped
    )
    with pytest.raises(
        ConfigError, match=r"^eval.ruler.tasks: no task can run: qa_2 \(no eval.ruler.hotpotqa_file"
    ):
        prepare_ruler(RulerConfig(tasks=["qa_2"], lengths=[LENGTH]), byte_tokenizer, CTX)


def test_bad_input_names_the_field(files, byte_tokenizer, tmp_path):
    from dprope.eval.suite import eval_config

    for name in ("essay_file", "squad_file", "hotpotqa_file"):
        with pytest.raises(
            ConfigError, match=rf"^eval.ruler.{name}: /no/file.txt does not exist or is not a file$"
        ):
            eval_config({"ruler": {name: "/no/file.txt"}})
    with pytest.raises(ConfigError, match=r"^tasks\[0\]: unknown RULER task 'qa'"):
        RulerConfig(tasks=["qa"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(ConfigError, match=r"^eval.ruler.squad_file: .* is not in the SQuAD format"):
        prepare_ruler(RulerConfig(tasks=["qa_1"], squad_file=str(bad), lengths=[LENGTH]), byte_tokenizer, CTX)
    with pytest.raises(ConfigError, match=r"^eval.ruler.num_samples: 500 exceeds the 20 questions"):
        prepare_ruler(config(files, tasks=["qa_2"], num_samples=500), byte_tokenizer, CTX)
    with pytest.raises(ConfigError, match="eval.ruler.lengths: 20000 exceeds"):
        prepare_ruler(config(files, lengths=[20000]), byte_tokenizer, CTX)
    with pytest.raises(ConfigError, match="eval.ruler.lengths: 700 leaves no room for a vt prompt"):
        prepare_ruler(config(files, tasks=["vt"], lengths=[700]), byte_tokenizer, CTX)


def test_helpers():
    assert largest_fitting(lambda n: 40 + 7 * n, 40 + 7 * 12 + 6, 1) == 12
    assert largest_fitting(lambda n: 40 + 7 * n, 46, 1) is None
    assert [listed(q) for q in (["a"], ["a", "b"], ["a", "b", "c", "d"])] == [
        "a",
        "a, and b",
        "a, b, c, and d",
    ]
    text = 'He said "go." Then (it ended.) Did it? Yes! Version 3.5 is out. End'
    assert split_sentences(text) == [
        'He said "go."',
        "Then (it ended.)",
        "Did it?",
        "Yes!",
        "Version 3.5 is out.",
        "End",
    ]


def test_end_to_end_scores_the_known_answers(files, tiny_eval_model, byte_tokenizer, tmp_path):
    """Through run_suite with a generation backend that knows each prompt's answers: at the first
    length every task but vt is answered (100), at the second only the first sample of each task
    and length (50, the other empty); vt always gets a wrong answer (0)."""
    from dprope.eval.backends import Backends
    from dprope.eval.benchmarks import BENCHMARKS
    from dprope.eval.suite import EvalConfig, run_suite

    lengths = [2200, 2600]
    ruler = config(files, lengths=lengths, num_samples=2)
    # the same samples the run draws (same config, tokenizer and seed), to look answers up by prompt
    expected = prepare_ruler(ruler, byte_tokenizer, EvalContext(1024, allow_beyond_max_position=True))
    index = {tuple(s.input_ids): (s, n % 2) for n, s in enumerate(expected.samples)}
    assert len(index) == len(expected.samples) == 13 * 2 * 2
    calls = []

    def answers(model, tokenizer, prompts, max_new_tokens, **kwargs):
        cells = {(index[tuple(p)][0].task, index[tuple(p)][0].length) for p in prompts}
        calls.append((cells, max_new_tokens))
        out = []
        for prompt in prompts:
            sample, second = index[tuple(prompt)]
            oracle = sample.answers[0] if sample.task in ("qa_1", "qa_2") else ", ".join(sample.answers)
            if sample.task == "vt":
                out.append("I do not know.")
            elif sample.length == lengths[1] and second:
                out.append(" \x00\n ")  # empty once RULER's clean-up has run: a null
            else:
                out.append(f" {oracle}\x07 and nothing else")  # RULER's clean-up keeps the match
        return out

    settings = EvalConfig(
        tasks=["ruler"], batch_size=4, progress=False, allow_beyond_max_position=True, ruler=ruler
    )
    result = run_suite(tiny_eval_model, settings, backends=Backends(generate=answers)).benchmarks["ruler"]
    # one call per task and length, each with the task's own generation length
    assert [(cells, new) for cells, new in calls] == [
        ({(t, n)}, TASKS[t].max_new_tokens) for t in TASKS for n in lengths
    ]
    scores = {t: {"2200": 100.0, "2600": 50.0} for t in TASKS} | {"vt": {"2200": 0.0, "2600": 0.0}}
    assert result.details["scores"] == scores
    assert result.summary == pytest.approx({"2200": 1200 / 13, "2600": 600 / 13, "avg": 900 / 13})
    aggregates = result.details["aggregates"]  # 92.3 passes RULER's 85.6, 46.2 does not
    assert (aggregates["effective_length"], aggregates["effective_length_label"]) == (2200, "2200")
    assert aggregates["wavg_inc"] == pytest.approx((1200 / 13 + 2 * 600 / 13) / 3)
    assert aggregates["wavg_dec"] == pytest.approx((2 * 1200 / 13 + 600 / 13) / 3)
    nulls = {t: {"2200": "0/2", "2600": "1/2"} for t in TASKS} | {"vt": {"2200": "0/2", "2600": "0/2"}}
    assert result.details["nulls"] == nulls
    assert len(result.samples) == 52
    assert all(r["prompt_tokens"] <= r["length"] - TASKS[r["task"]].max_new_tokens for r in result.samples)
    assert (
        f"| **mean over 13 tasks** | {1200 / 13:.2f} | {600 / 13:.2f} | {900 / 13:.2f} |" in result.markdown
    )
    figures = BENCHMARKS["ruler"].plot(result, "tiny", tmp_path)
    assert [p.name for p in figures] == ["ruler.png", "ruler_tasks.png"]


def test_essay_haystack_from_a_data_preset(byte_tokenizer):
    from dprope.data import DataConfig
    from dprope.data.sources import load_documents

    data = DataConfig()  # the embedded preset
    cfg = RulerConfig(tasks=["niah_single_2"], lengths=[LENGTH], num_samples=1, essay_split="test")
    sample = prepare_ruler(cfg, byte_tokenizer, CTX, data).samples[0]
    text = byte_tokenizer.decode(sample.input_ids, skip_special_tokens=True)
    first_words = " ".join(next(iter(load_documents(data, "test", "x")))["text"].split()[:5])
    assert first_words in text and sample.answers[0] in text
    with pytest.raises(ConfigError, match=r"^data: eval.ruler.essay_split reads a data preset"):
        prepare_ruler(cfg, byte_tokenizer, CTX)
    with pytest.raises(ConfigError, match=r"^eval.ruler.essay_split: 'train' is not an evaluation split"):
        prepare_ruler(
            RulerConfig(tasks=["niah_single_2"], lengths=[LENGTH], essay_split="train"),
            byte_tokenizer,
            CTX,
            data,
        )


# Official generator (NVIDIA/RULER c3f5e3b), on the byte tokenizer saved with save_pretrained:
#   python scripts/data/prepare.py --benchmark synthetic --task <task> --tokenizer_type hf \
#     --tokenizer_path <byte tokenizer dir> --max_seq_length 3000 --model_template_type base --num_samples 3
# prints prompts (input + answer_prefix) of these token counts (BOS added) and line counts, every sample:
OFFICIAL_AT_3000 = {"niah_multikey_3": (2837, 23), "fwe": (2732, 1), "niah_single_1": (None, 29)}


@pytest.mark.parametrize("task", list(OFFICIAL_AT_3000))
def test_haystack_sizes_equal_the_official_generators(prepared, byte_tokenizer, task):
    tokens, newlines = OFFICIAL_AT_3000[task]
    for text, sample in prompts(prepared, byte_tokenizer, task):
        assert (
            text.count("\n") == newlines
        )  # niah_single_1: 27 noise blocks; niah_multikey_3: 22 filler needles
        assert tokens is None or len(sample.input_ids) == tokens  # both fully determined by the length


def test_cwe_refuses_a_length_its_word_list_cannot_fill(byte_tokenizer, monkeypatch):
    import dprope.eval.benchmarks.ruler.tasks as ruler_tasks

    monkeypatch.setattr(ruler_tasks, "english_words", lambda: english_words()[:60])  # a short list
    with pytest.raises(ConfigError, match="^eval.ruler.lengths: 3000 tokens take more words than the 60 of"):
        prepare_ruler(RulerConfig(tasks=["cwe"], lengths=[LENGTH], num_samples=1), byte_tokenizer, CTX)
    sample = prepare_ruler(
        RulerConfig(tasks=["cwe"], lengths=[2300], num_samples=1), byte_tokenizer, CTX
    ).samples[0]
    assert len(sample.input_ids) <= 2300 - 120  # a length the list fills still works
