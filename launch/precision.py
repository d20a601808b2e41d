"""RoPE precision: how far bf16 attention logits move when every position id is shifted.

    python launch/precision.py                                  # tiny preset, random init
    python launch/precision.py model=llama2_7b model.pretrained=DIR precision.length=4096

Prints the table, writes precision.json and precision.png to the run directory (or
`precision.output_dir`). Runs on a GPU when one is present.
"""

from __future__ import annotations

from pathlib import Path

from dprope.cli import hydra_main
from dprope.model import ModelConfig
from dprope.rope.precision_analysis import PrecisionJob, format_table, measure, write_figure, write_json
from dprope.train.engine import check_pretrained


def load_model(model: ModelConfig):
    """The float32 causal LM: the checkpoint's weights, or the preset's seeded random init."""
    import torch
    from transformers import AutoModelForCausalLM

    if model.pretrained is None:
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(model.hf_config(), dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(model.pretrained, dtype=torch.float32).eval()


def build(cfg) -> PrecisionJob:
    job = PrecisionJob.from_config(cfg)
    check_pretrained(job.model)
    return job


@hydra_main("precision", build)
def main(cfg, job: PrecisionJob) -> None:
    settings = job.precision
    model = load_model(job.model)
    result = measure(model, settings, model.config.vocab_size)
    print(format_table(result), end="\n\n")
    if settings.output_dir:
        output_dir = Path(settings.output_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        output_dir = Path(HydraConfig.get().runtime.output_dir)
    print(f"precision: {write_json(result, output_dir)}")
    if settings.figures:
        print(f"figure: {write_figure(result, output_dir)}")


if __name__ == "__main__":
    main()
