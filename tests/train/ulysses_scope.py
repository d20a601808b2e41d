"""Under two processes (torchrun): a model planned with sequence parallelism 2 routes its own
attention through DeepSpeed's Ulysses attention, while transformers' attention registry and a
model built afterwards in the same process attend as plain transformers does. Prints one line
``ulysses scope: ok`` on success (`tests/train/test_long_context.py`).

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.train.ulysses_scope
"""

from __future__ import annotations

import copy

import torch


def main() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from dprope.instance_patch import global_overrides
    from dprope.model import ModelConfig
    from dprope.rope.registry import default_config
    from dprope.train.config import TrainerConfig
    from dprope.train.engine import build_model, init_distributed, materialise
    from dprope.train.micro_step import UlyssesStep
    from dprope.train.plan import plan_training

    model_cfg = ModelConfig(name="tiny", tokenizer="byte")
    trainer = TrainerConfig(
        output_dir="unused", global_batch_size=2, micro_batch_size=1, sequence_parallel_size=2
    )
    plan = plan_training(model_cfg, default_config("pi", 2.0), trainer, 256, world_size=2)
    built = materialise(plan, init_distributed())
    assert isinstance(built.micro_step, UlyssesStep) and built.parts.sp_group is not None

    # the trained model's attention modules look the Ulysses wrapper up in their own registry
    routed = [m for m in built.engine.module.modules() if "ALL_ATTENTION_FUNCTIONS" in global_overrides(m)]
    assert len(routed) == model_cfg.num_hidden_layers, len(routed)
    for module in routed:
        assert global_overrides(module)["ALL_ATTENTION_FUNCTIONS"]["sdpa"] is not sdpa_attention_forward
    # the process-wide registry is transformers' own again
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward

    # a model built afterwards attends over its whole input on each rank, as eager attention does
    # (each from its own copy of the config: building a model sets the config's attention)
    later = build_model(model_cfg, copy.deepcopy(plan.hf_config), "fp32", "sdpa", seed=0).eval()
    assert later.config._attn_implementation == "sdpa"
    assert not [m for m in later.modules() if "forward" in vars(m)]
    reference = build_model(model_cfg, copy.deepcopy(plan.hf_config), "fp32", "eager", seed=0).eval()
    ids = torch.randint(3, 250, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(later(input_ids=ids).logits, reference(input_ids=ids).logits)
    if torch.distributed.get_rank() == 0:
        print("ulysses scope: ok", flush=True)


if __name__ == "__main__":
    main()
