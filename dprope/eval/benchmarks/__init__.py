"""The benchmark registry: one folder per benchmark, ``dprope/eval/benchmarks/<name>/``, whose
``__init__.py`` defines ``BENCHMARK`` (`dprope.eval.benchmark.Benchmark`), and one line below.

The folder name is the benchmark's name (``eval=<name>``, ``eval.<name>.*``, ``eval.tasks``);
the order below is the order of ``eval=all`` and of the ``eval`` config's sections.
"""

from __future__ import annotations

from importlib import import_module

from dprope.eval.benchmark import Benchmark

REGISTERED = (
    "passkey",
    "perplexity",
    "longbench_e",
    "longbench_v2",
    "ruler",
    "babilong",
    "open_llm",
)

BENCHMARKS: dict[str, Benchmark] = {
    name: import_module(f"{__name__}.{name}").BENCHMARK for name in REGISTERED
}
