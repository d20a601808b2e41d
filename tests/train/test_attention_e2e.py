"""Training with document and anchor attention end to end on CPU: one-line errors, exact resume."""

from __future__ import annotations

import signal

import pytest

from dprope.config import ConfigError
from tests.train.conftest import assert_one_line_error, launch, read_metrics, run_train, small_run
from tests.train.test_train_e2e import wait_for_steps


@pytest.mark.parametrize(
    "overrides,field",
    [
        (["trainer.attention=sliding"], "trainer.attention"),
        (["trainer.rope_precision=bf16"], "trainer.rope_precision"),
        (["trainer.attention=anchor", "data.add_bos=false"], "data.add_bos"),
        (["trainer.attention=document", "data.add_bos=false"], "data.add_bos"),
    ],
)
def test_bad_attention_input_is_one_line_before_the_model_loads(overrides, field, tmp_path, data_cache):
    result = run_train([*small_run(tmp_path, data_cache), *overrides], timeout=120)
    assert_one_line_error(result, field)
    assert not (tmp_path / "checkpoints").exists()


def test_a_tokenizer_without_bos_is_refused_for_anchor(byte_tokenizer):
    import copy

    from dprope.train.attention import ATTENTION_MODES

    tokenizer = copy.deepcopy(byte_tokenizer)
    tokenizer.bos_token = None
    assert tokenizer.bos_token_id is None
    assert ATTENTION_MODES["causal"].collate(tokenizer.bos_token_id) is not None
    for mode in ("document", "anchor"):
        with pytest.raises(
            ConfigError, match=f"model.tokenizer: trainer.attention={mode} needs a tokenizer with a BOS"
        ):
            ATTENTION_MODES[mode].collate(tokenizer.bos_token_id)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["document", "anchor"])
def test_sigkill_then_resume_reproduces_every_loss(mode, tmp_path, data_cache):
    overrides = [
        f"trainer.attention={mode}",
        "trainer.steps=12",
        "trainer.save_every=3",
        "trainer.export=false",
    ]
    reference = tmp_path / "reference"
    result = run_train(small_run(reference, data_cache, *overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"attention {mode}: SDPA" in result.stdout
    interrupted = tmp_path / "interrupted"
    process = launch(small_run(interrupted, data_cache, *overrides))
    wait_for_steps(process, interrupted, 4)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(read_metrics(interrupted)) < 12
    resumed = run_train(small_run(interrupted, data_cache, *overrides))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["loss"] for r in read_metrics(interrupted)] == [r["loss"] for r in read_metrics(reference)]
