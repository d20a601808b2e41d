"""The training corpus of the reproduction: the data preset's training split mixed with
synthetic passkey documents (`dprope.reproduce.synthetic`), written as one JSON-lines file that
the trainer reads as a ``files`` source.

The corpus documents (Python source for the embedded preset) are cut at line ends into pieces of
at most ``piece_chars`` characters, so the trainer's seeded document shuffle mixes the two kinds
evenly and any prefix of it (the pre-training subset is one) holds close to ``share`` synthetic
bytes; whole files (up to 750 kB) would make the share of a 0.6M-token prefix a matter of which
few files come first. Synthetic documents are added until they make up ``share`` of the split's
UTF-8 bytes (under the byte tokenizer: of its tokens, BOS and EOS aside).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dprope.reproduce.synthetic import training_documents

CORPUS_FILE = "train.jsonl"
_BATCH = 4096  # synthetic documents drawn per generator call


def pieces(text: str, piece_chars: int) -> Iterator[str]:
    """``text`` cut after line ends into pieces of at most ``piece_chars`` characters (a longer
    line is cut inside); joined again they give back ``text``."""
    piece, size = [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > piece_chars:  # a line longer than a piece: cut inside it
            if piece:
                yield "".join(piece)
                piece, size = [], 0
            yield line[:piece_chars]
            line = line[piece_chars:]
        if piece and size + len(line) > piece_chars:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield "".join(piece)


def write_corpus(
    texts: Iterable[str],
    path: Path,
    share: float,
    piece_chars: int,
    seed: int,
    key_length: int,
    min_chars: int,
    max_chars: int,
) -> dict[str, Any]:
    """Write the mixed corpus to ``path`` (JSON lines, field ``text``); returns its counts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    counts = {"corpus_pieces": 0, "corpus_bytes": 0, "synthetic_documents": 0, "synthetic_bytes": 0}
    with tmp.open("w", encoding="utf-8") as out:
        for text in texts:
            for piece in pieces(text, piece_chars):
                if piece.strip():
                    out.write(json.dumps({"text": piece}) + "\n")
                    counts["corpus_pieces"] += 1
                    counts["corpus_bytes"] += len(piece.encode())
        target = share / (1 - share) * counts["corpus_bytes"]
        batch = 0
        while counts["synthetic_bytes"] < target:
            for document in training_documents(
                seed + 1_000_003 * batch, _BATCH, key_length, min_chars, max_chars
            ):
                if counts["synthetic_bytes"] >= target:
                    break
                out.write(json.dumps({"text": document}) + "\n")
                counts["synthetic_documents"] += 1
                counts["synthetic_bytes"] += len(document.encode())
            batch += 1
    tmp.replace(path)
    total = counts["corpus_bytes"] + counts["synthetic_bytes"]
    counts["synthetic_share"] = counts["synthetic_bytes"] / total if total else 0.0
    return counts
