"""Evaluation inputs that used to end in tracebacks: a truncated checkpoint, a file given as a
model or tokenizer directory, lm-eval tasks whose hub data cannot be had (offline, or the hub
unreachable), and odd essay and prediction files."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.open_llm import prepare_open_llm
from dprope.eval.benchmarks.open_llm.config import OpenLLMConfig
from dprope.eval.common import EvalContext
from dprope.eval.harness import LmEvalTask
from dprope.eval.loading import resolve_checkpoint
from dprope.model import ModelConfig
from tests.eval.test_cli import run_cli


@pytest.fixture
def truncated_dir(tiny_model_dir, tmp_path):
    path = tmp_path / "cut"
    shutil.copytree(tiny_model_dir, path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    return path


def test_a_truncated_checkpoint_is_refused_before_its_weights_load(truncated_dir, tiny_model_dir):
    resolve_checkpoint(ModelConfig(name="tiny", pretrained=str(tiny_model_dir)))  # intact: fine
    with pytest.raises(
        ConfigError, match=r"^model\.pretrained: .*cut/model\.safetensors: damaged safetensors file"
    ):
        resolve_checkpoint(ModelConfig(name="tiny", pretrained=str(truncated_dir)))
    with pytest.raises(ConfigError, match=r"config\.json is a file, not a model directory$"):
        resolve_checkpoint(ModelConfig(name="tiny", pretrained=str(tiny_model_dir / "config.json")))


def test_cli_one_line_exit_2(truncated_dir, tmp_path):
    out = tmp_path / "out"
    args = ["model=tiny", "eval=passkey", f"eval.output_dir={out}", f"model.pretrained={truncated_dir}"]
    proc = run_cli(tmp_path / "hydra", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.pretrained: "), proc.stderr[-2000:]
    assert "damaged safetensors file" in lines[0] and not out.exists()


def test_a_file_given_as_the_tokenizer_directory(tiny_model_dir):
    from dprope.data.tokenizer import load_tokenizer

    with pytest.raises(
        ConfigError, match=r"^model\.tokenizer: .*tokenizer\.json is a file, not a tokenizer directory$"
    ):
        load_tokenizer(str(tiny_model_dir / "tokenizer.json"))
    damaged = tiny_model_dir.parent / "damaged-tokenizer"
    shutil.copytree(tiny_model_dir, damaged, dirs_exist_ok=True)
    (damaged / "tokenizer.json").write_bytes(b"\x89PNG" + bytes(32))
    with pytest.raises(ConfigError, match=r"^model\.tokenizer: cannot load tokenizer "):
        load_tokenizer(str(damaged))


# ---- lm-eval tasks whose data lives on the hub ----

HUB_TASK = """\
task: hub_arith
dataset_path: dprope-test/tiny_arith
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{question}}\\nA:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
"""


@pytest.fixture
def hub_task_dir(tmp_path):
    path = tmp_path / "tasks"
    path.mkdir()
    (path / "hub_arith.yaml").write_text(HUB_TASK)
    (path / "hub_group.yaml").write_text("group: hub_group\ntask:\n  - hub_arith\n")
    return path


@pytest.fixture
def empty_datasets_cache(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "hf-datasets"
    cache.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def cache_tiny_arith(cache) -> None:
    """What `datasets` leaves in its cache after downloading dprope-test/tiny_arith, made by
    `datasets` itself (a builder named after that hub repository)."""
    import datasets

    class TinyArith(datasets.GeneratorBasedBuilder):
        def _info(self):
            return datasets.DatasetInfo(
                features=datasets.Features(
                    {
                        "question": datasets.Value("string"),
                        "choices": datasets.Sequence(datasets.Value("string")),
                        "label": datasets.Value("int64"),
                    }
                )
            )

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name="test")]

        def _generate_examples(self):
            for i in range(3):
                yield i, {"question": f"{i} + 1 =", "choices": [str(i + 1), str(i + 2)], "label": 0}

    builder = TinyArith(
        cache_dir=str(cache), dataset_name="tiny_arith", repo_id="dprope-test/tiny_arith", hash="0123abcd"
    )
    builder.download_and_prepare()


def open_llm(task_dir, name="hub_arith"):
    return OpenLLMConfig(tasks=[LmEvalTask(name)], include_path=str(task_dir), include_defaults=False)


@pytest.mark.parametrize("name", ["hub_arith", "hub_group"])
def test_offline_a_task_whose_hub_data_is_not_cached_is_named(hub_task_dir, empty_datasets_cache, name):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the test suite runs offline
    with pytest.raises(ConfigError) as err:
        prepare_open_llm(open_llm(hub_task_dir, name), EvalContext(max_positions=1024))
    message = str(err.value)
    assert message.startswith(
        f"eval.open_llm.tasks[0].name: {name} reads dprope-test/tiny_arith, which is not in"
    )
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message


def test_offline_a_cached_task_passes_and_lm_eval_loads_it(hub_task_dir, empty_datasets_cache):
    cache_tiny_arith(empty_datasets_cache)
    manager = prepare_open_llm(open_llm(hub_task_dir), EvalContext(max_positions=1024))
    # the verdict is lm-eval's own: it builds the task from that cache, offline
    built = manager.load_task_or_group(["hub_arith"])
    task = built["hub_arith"]
    assert [doc["question"] for doc in task.test_docs()] == [
        "0 + 1 =",
        "1 + 1 =",
        "2 + 1 =",
    ]


def test_an_unreachable_hub_fails_fast_naming_the_task(hub_task_dir, empty_datasets_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        prepare_open_llm(open_llm(hub_task_dir), EvalContext(max_positions=1024))
    assert time.monotonic() - start < 30  # the index of one task directory and one refused probe
    message = str(err.value)
    assert message.startswith(
        "eval.open_llm.tasks[0].name: hub_arith reads dprope-test/tiny_arith from the Hugging Face hub, "
        "which cannot be reached (http://127.0.0.1:9: "
    )
    assert message.endswith("set HF_HUB_OFFLINE=1 to use the datasets already in the cache")


def test_tasks_over_local_files_need_no_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"question": "1 + 1 =", "choices": ["2"], "label": 0}) + "\n"
    )
    local = HUB_TASK.replace(
        "dataset_path: dprope-test/tiny_arith",
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'rows.jsonl'}",
    )
    (tmp_path / "local.yaml").write_text(local.replace("task: hub_arith", "task: local_arith"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # never asked
    prepare_open_llm(open_llm(tmp_path, "local_arith"), EvalContext(max_positions=1024))


# ---- benchmark files: binary, non-UTF-8, a directory ----


def test_benchmark_files_that_are_not_text_are_named(tmp_path):
    from dprope.eval.benchmarks.longbench_e.data import read_local
    from dprope.eval.benchmarks.longbench_e.scoring import read_predictions
    from dprope.eval.benchmarks.ruler.config import RulerConfig
    from dprope.eval.benchmarks.ruler.sources import read_squad, read_words

    essay = tmp_path / "essays.txt"
    essay.write_bytes("An essay about caf\xe9s.".encode("latin-1"))  # was read with the byte replaced
    with pytest.raises(
        ConfigError, match=rf"^eval\.ruler\.essay_file: {essay}: not UTF-8 text \(byte 0xe9 at offset 18\)$"
    ):
        read_words(str(essay), "eval.ruler.essay_file")
    squad = tmp_path / "dev-v2.0.json"
    squad.write_bytes(b"\x1f\x8b\x08" + bytes(20))  # a gzip file under the JSON's name
    with pytest.raises(
        ConfigError, match=rf"^eval\.ruler\.squad_file: {squad}: not UTF-8 text \(byte 0x8b at offset 1\)$"
    ):
        read_squad(str(squad), "eval.ruler.squad_file")
    with pytest.raises(ConfigError, match=rf"^essay_file: {tmp_path} is a directory, not a file$"):
        RulerConfig(essay_file=str(tmp_path))
    (tmp_path / "gov_report.jsonl").write_bytes(b'{"pred": "caf\xe9"}\n')
    with pytest.raises(
        ConfigError, match=r"^eval\.longbench_e\.predictions_dir: .*gov_report\.jsonl: not UTF-8 text"
    ):
        read_predictions(str(tmp_path), ["gov_report_e"])
    (tmp_path / "trec_e.jsonl").write_bytes(bytes(8))
    with pytest.raises(
        ConfigError,
        match=r"^eval\.longbench_e\.data_dir: .*trec_e\.jsonl: a binary file \(NUL byte at offset 0\)",
    ):
        read_local(str(tmp_path), "trec_e")
