"""The passkey generator against known answers, and the retrieval scorer on a stub model whose
accuracy grid is known from the layout alone."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from dprope.data.tokenizer import byte_tokenizer
from dprope.reproduce.corpus import pieces, write_corpus
from dprope.reproduce.retrieval import accuracy_grid, exact_matches, retrieval
from dprope.reproduce.synthetic import (
    PromptBuilder,
    document_text,
    filler,
    overhead_chars,
    training_documents,
)

KEY_LINE = re.compile(r"pass key=([0-9A-Z]+)\.")
OVERHEAD = overhead_chars(2)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def test_document_layout_by_hand():
    text = document_text("7Q", 5, 3)
    assert text == "the g\npass key=7Q.\nthe\npass key?7Q"
    assert OVERHEAD == len(text) - 8 == 26 and overhead_chars(5) == 32
    assert filler(100).startswith("the grass is green. the sky is blue.") and len(filler(100)) == 100
    assert (
        filler(89)[-5:] == "gain." and filler(100)[89:] == " the grass "
    )  # 89 characters, joined by a space


def test_prompt_has_the_target_length_the_depth_and_the_answer_last(tokenizer):
    builder = PromptBuilder(tokenizer, 2)
    for length in (48, 128, 512):
        fill = length - 1 - OVERHEAD  # byte tokenizer: BOS + one token per character
        assert builder.filler_chars(length) == fill
        for depth in (0.0, 0.5, 1.0):
            prompt = builder.prompt(length, depth, "3K")
            assert len(prompt.input_ids) == length and prompt.input_ids[0] == tokenizer.bos_token_id
            assert prompt.before_chars == round(depth * fill)
            text = tokenizer.decode(prompt.input_ids[1:])
            assert text.index("pass key=3K.") == prompt.before_chars + 1  # after "\n"
            assert text.endswith("\npass key?3K") and prompt.answer_tokens == 2
            assert tokenizer.decode(prompt.input_ids[-2:]) == "3K"
            # the key's characters are the only digit and upper-case letter of the prompt
            assert sum(c.isdigit() for c in text) == 2 and sum(c.isupper() for c in text) == 2
    with pytest.raises(ValueError, match="cannot hold"):
        builder.filler_chars(OVERHEAD)  # no room for BOS


def test_seeded_grid_and_training_documents(tokenizer):
    builder = PromptBuilder(tokenizer, 3)
    grid = builder.grid([64, 96], [0.0, 1.0], 3, seed=7)
    assert [(p.length, p.depth) for p in grid] == [(64, 0.0)] * 3 + [(64, 1.0)] * 3 + [(96, 0.0)] * 3 + [
        (96, 1.0)
    ] * 3
    assert [p.key for p in grid] == [
        p.key for p in PromptBuilder(tokenizer, 3).grid([64, 96], [0.0, 1.0], 3, 7)
    ]
    assert [p.key for p in grid] != [p.key for p in builder.grid([64, 96], [0.0, 1.0], 3, 8)]
    # a cell's keys do not depend on the other cells
    assert [p.key for p in builder.grid([96], [1.0], 3, 7)] == [p.key for p in grid[9:]]
    assert all(re.fullmatch(r"[0-9][A-Z][0-9]", p.key) for p in grid)

    documents = training_documents(3, 2000, 2, OVERHEAD, 126)
    assert documents == training_documents(3, 2000, 2, OVERHEAD, 126)
    assert documents != training_documents(4, 2000, 2, OVERHEAD, 126)
    lengths = [len(d) for d in documents]
    assert min(lengths) >= OVERHEAD and max(lengths) <= 126 and len(set(lengths)) > 80
    # log-uniform: as many documents in [26, 57) as in [57, 126] (both ~ half of ln(126/26))
    short = sum(n < 57 for n in lengths) / len(lengths)
    assert 0.45 < short < 0.55
    for document in documents:  # the key asked for at the end is the one hidden in the filler
        assert re.fullmatch(r"[0-9][A-Z]", KEY_LINE.search(document).group(1))
        assert KEY_LINE.search(document).group(1) == document[-2:]
    with pytest.raises(ValueError, match="min_chars"):
        training_documents(0, 1, 2, OVERHEAD - 1, 100)


def test_corpus_pieces_and_share(tmp_path):
    text = "".join(f"line {i}\n" for i in range(300)) + "x" * 50
    cut = list(pieces(text, 40))
    assert "".join(cut) == text and max(map(len, cut)) <= 40
    assert all(p.endswith("\n") for p in cut[:-3])  # cut at line ends, the long last line inside
    counts = write_corpus([text, "short\n"], tmp_path / "train.jsonl", 0.25, 40, 0, 2, OVERHEAD, 126)
    rows = [json.loads(line)["text"] for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert counts["corpus_pieces"] == len(cut) + 1 and rows[: len(cut)] == cut
    assert counts["synthetic_documents"] == len(rows) - len(cut) - 1
    assert counts["synthetic_share"] == pytest.approx(0.25, abs=0.02)
    assert counts["corpus_bytes"] == len(text) + len("short\n")


class SpanStub(torch.nn.Module):
    """A model that retrieves the key only when the key line ends at most ``span`` tokens before
    the cue; otherwise it gets the key's last digit wrong. It reads only the tokens before each
    position, so greedy decoding with it is well defined."""

    def __init__(self, tokenizer, span: int):
        super().__init__()
        self.tokenizer, self.span = tokenizer, span
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for the scorer

    def next_token(self, prefix: list[int]) -> int:
        text = self.tokenizer.decode([t for t in prefix if t > 3])
        cue = re.search(r"\npass key\?([0-9A-Z]?)$", text)
        line = KEY_LINE.search(text)
        if cue is None or line is None:
            return self.tokenizer.convert_tokens_to_ids("x")
        typed = cue.group(1)
        key_position = len(self.tokenizer.encode(text[: line.start(1)]))  # BOS + characters
        cue_end = len(self.tokenizer.encode(text[: cue.start(1)])) - 1
        char = line.group(1)[len(typed)]
        if cue_end - key_position > self.span and typed:  # the second character wrong
            char = "A" if char != "A" else "B"
        return self.tokenizer.convert_tokens_to_ids(char)

    def forward(self, input_ids, use_cache=False):
        batch, width = input_ids.shape
        logits = torch.zeros(batch, width, len(self.tokenizer))
        for row in range(batch):
            ids = input_ids[row].tolist()
            for t in range(width):
                if ids[t] != self.tokenizer.pad_token_id:
                    logits[row, t, self.next_token(ids[: t + 1])] = 1.0
        return SimpleNamespace(logits=logits)


def greedy_key(model, prompt) -> bool:
    """Greedy decoding, one token at a time, from the prompt without its answer."""
    ids = prompt.input_ids[: -prompt.answer_tokens]
    for _ in range(prompt.answer_tokens):
        ids = ids + [model.next_token(ids)]
    return ids == prompt.input_ids


def test_scorer_recovers_the_known_grid_and_agrees_with_greedy_decoding(tokenizer):
    span, lengths, depths = 40, [48, 64, 96], [0.0, 0.5, 1.0]
    stub = SpanStub(tokenizer, span)
    result = retrieval(stub, tokenizer, 2, lengths, depths, trials=2, seed=0, batch_size=5)  # mixed widths
    expected = {}
    for length in lengths:
        fill = length - 1 - OVERHEAD
        for depth in depths:
            key_position = 1 + round(depth * fill) + 1 + len("pass key=")
            cue_end = length - 3
            expected.setdefault(str(length), {})[f"{depth:g}"] = float(cue_end - key_position <= span)
    assert result["grid"] == expected
    assert 0 < sum(v for row in expected.values() for v in row.values()) < 9  # both outcomes occur
    assert result["accuracy"] == {n: sum(row.values()) / 3 for n, row in expected.items()}

    prompts = PromptBuilder(tokenizer, 2).grid(lengths, depths, 2, 0)
    scored = exact_matches(stub, prompts, batch_size=4)
    assert scored == [greedy_key(stub, p) for p in prompts]
    assert accuracy_grid(prompts, scored) == expected
