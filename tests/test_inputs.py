"""The input-file checks (`dprope.inputs`): what a path is, binary and non-UTF-8 text with the
offset a plain decode reports, and safetensors files cut short."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import save_file

from dprope import inputs
from dprope.config import ConfigError


def test_a_path_of_the_wrong_kind_says_what_it_is(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"^f: .* is a directory, not a file$"):
        inputs.existing_file(tmp_path, "f")
    with pytest.raises(ConfigError, match=r"^f: no such file: "):
        inputs.existing_file(tmp_path / "missing.txt", "f")
    with pytest.raises(ConfigError, match=r"^d: .*file\.txt is a file, not a directory$"):
        inputs.existing_dir(tmp_path / "file.txt", "d")
    with pytest.raises(ConfigError, match=r"^d: no directory at "):
        inputs.existing_dir(tmp_path / "missing", "d")
    assert inputs.existing_file(tmp_path / "file.txt", "f") == tmp_path / "file.txt"
    assert inputs.existing_dir(tmp_path, "d") == tmp_path


def _reference(data: bytes) -> str | None:
    """The first problem of the file from one decode of all of it (the independent computation)."""
    problems = []
    nul = data.find(bytes(1))
    if nul >= 0:
        problems.append((nul, f"a binary file (NUL byte at offset {nul}), not text"))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data":
            what = f"not UTF-8 text (a character cut by the end of the file at offset {err.start})"
        else:
            what = f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        problems.append((err.start, what))
    return min(problems)[1] if problems else None


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_text_problems_are_found_at_the_offset_a_plain_decode_gives(tmp_path, monkeypatch, chunk):
    # chunks of 1, 3 and 7 bytes cut multi-byte characters at every place: the offsets must not move
    monkeypatch.setattr(inputs, "CHUNK", chunk)
    rng = random.Random(chunk)
    text = "".join(rng.choice(["a", "é", "€", "𝄞", "\n"]) for _ in range(200)).encode()
    cases = [
        text,  # valid
        text[:57] + b"\xe9" + text[57:],  # latin-1 é inside UTF-8
        text + "€".encode()[:2],  # a character cut by the end of the file
        text[:100] + bytes(1) + text[100:],  # binary
        b"\xff\xfe" + "utf-16".encode("utf-16-le"),  # another encoding altogether: 0xff first
        "é".encode()[:1] + bytes(1) + text,  # a character cut by a NUL
        bytes(range(256)),  # binary from its first byte
    ]
    path = tmp_path / "file.txt"
    for data in cases:
        path.write_bytes(data)
        assert inputs.text_problem(path) == _reference(data)


def test_a_head_check_reads_only_the_head(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * 1000 + b"\xff")
    assert inputs.text_problem(path, limit=1000) is None
    assert inputs.text_problem(path, limit=1001) == "not UTF-8 text (byte 0xff at offset 1000)"
    path.write_bytes(b"a" * 1000 + "€".encode()[:2])  # cut by the head, not by the end of the file
    path.write_bytes(path.read_bytes() + b"more")
    assert inputs.text_problem(path, limit=1001) is None
    path.write_bytes(b"a" * 999 + "€".encode()[:2])  # the limit falls exactly at the end of the file
    assert inputs.text_problem(path, limit=1001) == _reference(path.read_bytes()) is not None


def test_read_text_names_the_file(tmp_path):
    (tmp_path / "ok.txt").write_text("héllo", encoding="utf-8")
    (tmp_path / "latin.txt").write_bytes("héllo".encode("latin-1"))
    assert inputs.read_text(tmp_path / "ok.txt", "f") == "héllo"
    with pytest.raises(ConfigError, match=r"^f: .*latin\.txt: not UTF-8 text \(byte 0xe9 at offset 1\)$"):
        inputs.read_text(tmp_path / "latin.txt", "f")
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        inputs.read_text(tmp_path, "f")


def _weights(directory, shards: int = 1):
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer{i}.weight": torch.randn(64, 64) for i in range(4)}
    if shards == 1:
        save_file(tensors, directory / "model.safetensors")
        return [directory / "model.safetensors"]
    names = [f"model-0000{k + 1}-of-0000{shards}.safetensors" for k in range(shards)]
    weight_map = {}
    for k, name in enumerate(names):
        part = {key: t for i, (key, t) in enumerate(tensors.items()) if i % shards == k}
        save_file(part, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    (directory / inputs.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return [directory / n for n in names]


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01, 0.0])
def test_a_truncated_safetensors_file_is_named(tmp_path, keep):
    (path,) = _weights(tmp_path)
    inputs.check_safetensors(tmp_path, "model.pretrained")  # whole: no error
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * keep))
    with pytest.raises(ConfigError) as err:
        inputs.check_safetensors(tmp_path, "model.pretrained")
    message = str(err.value)
    assert message.startswith(f"model.pretrained: {path}: damaged safetensors file (") and "\n" not in message


def test_a_sharded_checkpoint_with_a_missing_or_cut_shard(tmp_path):
    first, second = _weights(tmp_path, shards=2)
    inputs.check_safetensors(tmp_path, "model.pretrained")
    second.write_bytes(second.read_bytes()[:-10])
    with pytest.raises(ConfigError, match=rf"{second.name}: damaged safetensors file"):
        inputs.check_safetensors(tmp_path, "model.pretrained")
    second.unlink()
    with pytest.raises(ConfigError, match=rf"names 1 shard\(s\) missing from .*: {second.name}$"):
        inputs.check_safetensors(tmp_path, "model.pretrained")
