"""Evaluation of context-window extension (docs/method-notes.md, section 7), run by `launch/eval.py`.

- `benchmarks/<name>/`: one folder per benchmark (passkey, perplexity, longbench_e, longbench_v2,
  ruler, babilong, open_llm) with its config, data preparation, run, scoring, display and figures;
  `benchmarks/__init__.py` registers them (`BENCHMARKS`), one line each;
- `benchmark`: what a benchmark declares (`Benchmark`, `Display`) and what `prepare` is handed;
- `suite`: `EvalConfig` (the run-wide settings plus one section per benchmark) and `run_suite`;
- `job`: the typed evaluation job (`EvalJob.from_config`);
- `common`: the run context, the result record, the length rule, markdown tables;
- `loading`: the checkpoint under test (local directory or hub id) and its limits;
- `generation`, `backends`: batched greedy decoding and the lm-eval model, replaceable together;
- `harness`: the lm-eval bridge shared by lm-eval benchmarks (open_llm, longbench_v2, babilong);
- `report`, `plots`, `compare`: results.json / results.md and figures, and side-by-side tables.
"""
