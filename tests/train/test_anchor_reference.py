"""`trainer.attention=anchor` with its default packing against the AnchorAttention authors' rule.

The reference below restates, independently, what the authors' public training code
(github haonan3/AnchorContext, `train.py` at commit 3af89f2, its flash-attention path and the
"tokenized" data format of their demo) does with a stretch of the token stream, read from that
code:

- documents are their tokenizer's output: BOS, text, no EOS;
- a window of T + 1 tokens is filled segment by segment from where the stream stands; a segment
  of two tokens or fewer is skipped; a segment that does not begin with BOS (the rest of a
  document cut at the previous window's end) gets one in front; the last segment is cut where
  the window is full;
- the training step reads the window's first T tokens as inputs and its last T as targets;
  "masking positions" count from 0 at every segment start (flash-attn's varlen segments are
  rebuilt from them: attention is causal within a segment); rotary positions are 0 .. T-1
  except 0 at every segment start after the first (the BOS there).

Their data format gives one window per pre-packed chunk of the stream; here each window starts
where the previous one stopped, which is what the pieces packing does with a whole corpus.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from dprope.data.config import ANCHORCONTEXT, DataConfig
from dprope.data.dataset import as_item
from dprope.data.packing import pack_stream, window_pieces
from dprope.train.attention import ATTENTION_MODES

BOS, PAD = 1, 0
CPU = torch.device("cpu")


def documents(seed: int, count: int = 60) -> list[list[int]]:
    """BOS + text, no EOS; lengths from 1 (BOS alone) to a few windows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 120, size=count)
    sizes[::5] = rng.integers(0, 3, size=len(sizes[::5]))
    return [[BOS, *rng.integers(3, 250, size=n).tolist()] for n in sizes]


def reference_windows(docs: list[list[int]], seq: int, count: int) -> list[dict[str, torch.Tensor]]:
    """The authors' windows: tokens, targets, rotary and masking positions, visibility."""
    stream = deque(docs)
    out = []
    while len(out) < count:
        window: list[int] = []
        ends: list[int] = []  # where each segment of the window ends
        while len(window) < seq + 1:
            segment = stream.popleft()
            if len(segment) <= 2:
                continue
            if segment[0] != BOS:
                segment = [BOS, *segment]
            room = seq + 1 - len(window)
            if len(segment) > room:
                stream.appendleft(segment[room:])  # the next stretch of the stream starts here
                segment = segment[:room]
            window += segment
            ends.append(len(window))
        starts = [0, *(end for end in ends[:-1])]  # their "bos_token_index": segment ends below T + 1
        masking = torch.arange(seq)
        rotary = torch.arange(seq)
        for begin, end in zip(starts, [*starts[1:], seq + 1], strict=True):
            masking[begin:end] -= begin
            if begin < seq:
                rotary[begin] = 0
        segment = torch.cumsum(masking == 0, 0)  # varlen segments start where masking positions are 0
        causal = torch.ones(seq, seq, dtype=torch.bool).tril()
        out.append(
            {
                "input_ids": torch.tensor(window[:seq]),
                "targets": torch.tensor(window[1:]),
                "rotary": rotary,
                "visible": (segment[:, None] == segment[None, :]) & causal,
                "cu_seqlens": torch.tensor([*(masking == 0).nonzero().flatten().tolist(), seq]),
            }
        )
    return out


def our_windows(docs: list[list[int]], seq: int, count: int) -> list[dict]:
    """The data layer's packing with the anchor mode's conventions, its collate and its inputs."""
    cfg = DataConfig(max_length=seq).resolved(ATTENTION_MODES["anchor"].packing)
    assert cfg.resolved() == cfg.resolved(ANCHORCONTEXT)
    arrays = [np.asarray(d, dtype=np.int64) for d in docs]  # add_eos is false: the documents as they are
    if cfg.packing == "pieces":
        arrays = window_pieces(arrays, cfg.window, BOS)
    items = [as_item(s, seq) for s in pack_stream(arrays, cfg.window, True, PAD)][:count]
    mode = ATTENTION_MODES["anchor"]
    rows = []
    for item in items:
        batch = mode.collate(BOS)([item])
        inputs = mode.inputs(batch, "sdpa", CPU)
        flash = mode.masks(batch, "flash_attention_2", CPU)
        rows.append(
            {
                "input_ids": inputs["input_ids"][0],
                "targets": inputs["shift_labels"][0],
                "rotary": inputs["position_ids"][0],
                "visible": inputs["attention_mask"][0, 0],
                "cu_seqlens": flash["cu_seq_lens_q"].long(),
            }
        )
    return rows


@pytest.mark.parametrize("seq,seed", [(16, 0), (64, 1), (64, 2), (256, 3)])
def test_anchor_windows_equal_the_authors_flash_path(seq, seed):
    docs = documents(seed)
    count = sum(len(d) for d in docs) // (2 * seq + 2)  # well inside the stream
    assert count >= 2
    ours, theirs = our_windows(docs, seq, count), reference_windows(docs, seq, count)
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in ("input_ids", "targets", "rotary", "visible", "cu_seqlens"):
            assert torch.equal(a[name], b[name]), f"window {index}: {name}"
    # the stream really exercised the rule: continued documents, skipped short ones, several anchors
    assert any(len(w["cu_seqlens"]) > 3 for w in theirs)


def test_the_standard_packing_is_not_the_authors():
    """The same documents with this project's own packing (`data.packing=stream`, EOS, T - 1
    targets) give other windows: the reference above can tell them apart."""
    docs, seq = documents(0), 64
    theirs = reference_windows(docs, seq, 2)
    arrays = [np.asarray([*d, 2], dtype=np.int64) for d in docs]  # EOS = 2 after every document
    items = [as_item(s, seq) for s in pack_stream(arrays, seq, True, PAD)][:2]
    batch = ATTENTION_MODES["anchor"].collate(BOS)(items)
    assert "shift_labels" not in batch  # T - 1 targets: the model shifts the labels
    assert not torch.equal(batch["input_ids"][1], theirs[1]["input_ids"])


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["trainer.attention=anchor"], (False, "pieces", True)),
        (["trainer.attention=anchor", "data.add_eos=true"], (True, "pieces", True)),
        (
            ["trainer.attention=anchor", "data.packing=stream", "data.extra_target=false"],
            (False, "stream", False),
        ),
        (["trainer.attention=document"], (True, "stream", False)),
        ([], (True, "stream", False)),
        (["data.extra_target=true"], (True, "stream", True)),
    ],
)
def test_packing_conventions_follow_the_attention_mode_unless_set(overrides, expected):
    from dprope.cli import compose_config
    from dprope.train.config import RunConfig

    data = RunConfig.from_config(compose_config("train", overrides)).data
    assert (data.add_eos, data.packing, data.extra_target) == expected


def test_a_bad_packing_is_one_line_naming_the_field():
    from dprope.config import ConfigError
    from dprope.data.config import data_config

    with pytest.raises(ConfigError) as err:
        data_config({"packing": "documents"})
    assert str(err.value) == "data.packing: must be one of stream, pieces or null (got 'documents')"
