"""Evaluation of context-window extension (docs/method-notes.md, section 7), run by `launch/eval.py`.

- `suite`: the benchmark registry (`BENCHMARKS`), `EvalConfig` and `run_suite`;
- `loading`: the checkpoint under test (local directory or hub id) and its limits;
- `passkey`, `perplexity`, `longbench` (+ `longbench_tasks`, `longbench_metrics`, `longbench_scoring`),
  `ruler` (+ `ruler_tasks`), `open_llm` (the lm-eval bridge): one module per benchmark;
- `generation`: batched greedy decoding with the KV cache;
- `report`, `plots`, `compare`: results.json / results.md, figures, and side-by-side tables.
"""
