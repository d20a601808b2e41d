"""RULER's file settings through `launch/eval.py`: a missing file is one line naming the field (exit 2)."""

from __future__ import annotations

from tests.eval.test_cli import run_cli


def test_a_missing_haystack_file_is_one_line_naming_the_field(tiny_model_dir, tmp_path):
    field = "essay_file"  # squad_file and hotpotqa_file share its check (test_ruler.py)
    proc = run_cli(
        tmp_path / "hydra",
        "eval=ruler",
        "model=tiny",
        f"model.pretrained={tiny_model_dir}",
        f"eval.output_dir={tmp_path}",
        f"eval.ruler.{field}=/no/such/file.txt",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert lines == [f"error: eval.ruler.{field}: /no/such/file.txt does not exist or is not a file"], (
        proc.stderr
    )
    assert not (tmp_path / "results.json").exists()
