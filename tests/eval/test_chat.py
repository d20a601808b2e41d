"""``eval.chat_template``: one rule for every benchmark's prompts, recorded in the results, and a
one-line error when the tokenizer has none."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.passkey.config import PasskeyConfig
from dprope.eval.benchmarks.perplexity.config import PerplexityConfig
from dprope.eval.benchmarks.ruler.config import RulerConfig

TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a chat template in its tokenizer (a saved chat model)."""
    from dprope.data.tokenizer import byte_tokenizer

    path = tmp_path_factory.mktemp("tiny-chat")
    for file in tiny_model_dir.iterdir():
        if file.is_file():
            shutil.copy(file, path / file.name)
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(path)
    return path


class Recorder:
    """A generation backend that keeps every prompt and answers nothing useful."""

    def __init__(self):
        self.prompts = []

    def __call__(self, model, tokenizer, prompts, max_new_tokens, **kwargs):
        self.prompts += [(tokenizer.decode(ids), len(ids)) for ids in prompts]
        return [" no idea"] * len(prompts)


def settings(chat: bool):
    from dprope.eval.suite import EvalConfig

    return EvalConfig(
        tasks=["passkey", "ruler", "perplexity"],
        progress=False,
        allow_beyond_max_position=True,
        chat_template=chat,
        passkey=PasskeyConfig(lengths=[400, 600], trials=2),
        ruler=RulerConfig(lengths=[2200], num_samples=2, tasks=["niah_single_1", "vt"]),
        perplexity=PerplexityConfig(lengths=[128], stride=64),
    )


def run(model_dir, chat: bool, text_documents, tmp_path):
    from dprope.data import data_config
    from dprope.eval.backends import Backends
    from dprope.eval.suite import run_suite
    from dprope.model import ModelConfig

    data = data_config(
        {
            "name": "t",
            "source": "files",
            "paths": {"test": [str(p) for p in text_documents]},
            "cache_dir": str(tmp_path),
        }
    )
    recorder = Recorder()
    model = ModelConfig(name="tiny-chat", pretrained=str(model_dir))
    report = run_suite(model, settings(chat), data, backends=Backends(generate=recorder))
    return report, recorder.prompts


def test_every_benchmark_prompt_is_wrapped_and_fitted_and_the_run_records_it(
    chat_model_dir, text_documents, tmp_path
):
    report, prompts = run(chat_model_dir, True, text_documents, tmp_path)
    assert len(prompts) == 2 * 2 + 2 * 2  # passkey: 2 lengths x 2 trials; RULER: 2 tasks x 2 samples
    for text, _ in prompts:
        assert text.startswith("<|user|>") and text.endswith("<|end|><|assistant|>"), text[:40]
        assert "<s>" not in text  # no BOS of the plain encoding inside the wrapped prompt
    passkey = [s for s in report.benchmarks["passkey"].samples]
    assert all(s["tokens"] <= s["length"] for s in passkey)  # fitted with the template's tokens
    ruler = report.benchmarks["ruler"].samples
    assert all(r["prompt_tokens"] <= 2200 - RulerConfig().new_tokens(r["task"]) for r in ruler)
    assert report.settings["chat_template"] is True
    assert report.model["chat_template_sha256"] == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert report.benchmarks["perplexity"].details["chat_template"].startswith("not applied")

    # the same run without the option: the same benchmark prompts, unwrapped
    plain, plain_prompts = run(chat_model_dir, False, text_documents, tmp_path)
    assert plain.settings["chat_template"] is False and plain.model["chat_template_sha256"] is None
    assert len(plain_prompts) == len(prompts)
    assert not any("<|user|>" in text for text, _ in plain_prompts)
    assert plain.benchmarks["perplexity"].details["chat_template"] is False


def test_a_tokenizer_without_a_template_is_one_line_before_the_weights_load(
    tiny_model_dir, text_documents, tmp_path, monkeypatch
):
    import dprope.eval.loading as loading

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(loading, "load_model", no_load)
    with pytest.raises(ConfigError) as err:
        run(tiny_model_dir, True, text_documents, tmp_path)
    assert err.value.field == "eval.chat_template"
    assert str(err.value).startswith("eval.chat_template: the tokenizer of tiny-chat has no chat template")
