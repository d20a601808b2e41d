"""The reproduction as stages (issue: `make reproduce`), each built from the project's own parts:

a. ``corpus``: the data preset's training split cut into pieces and mixed with synthetic passkey
   documents of at most L tokens (`dprope.reproduce.corpus`), the training data of every stage;
b. ``analysis``: the disturbance table of every strategy for that geometry at s
   (`dprope.rope.report.run_analysis`, the analysis CLI's code);
c. ``seed<n>/pretrain``: `dprope.train.loop.train` from a random init at L (rope ``none``), with
   its HF export kept as the pre-trained model that every strategy of the seed starts from;
d. ``seed<n>/precision``: the RoPE shift analysis on that model (and a random init) in bf16 and
   float32 (`dprope.rope.precision_analysis.measure`);
e. ``seed<n>/free/<strategy>``: the strategy applied at load time to the pre-trained export
   (`dprope.eval.loading.load_with_strategy`), then `measure` (perplexity, loss by position)
   and the retrieval grid (`dprope.reproduce.retrieval`);
f. ``seed<n>/finetune/<strategy>``: the trainer again, from the export at s x L for a fixed token
   budget (``none`` is the control: the same tokens, no scaling); ``seed<n>/tuned/<strategy>``
   measures its export as in e;
g. ``seed<n>/finetune/<strategy>-<mode>``: strategies of ``reproduce.attention`` fine-tuned
   again with ``trainer.attention=<mode>`` (document, anchor), measured in ``tuned/`` as in f;
h. ``report.md``, ``results.json`` and the figures, rewritten from whatever stages are done.

Every seed repeats c to g (a new random init; the same data order), so strategies are compared
on the same pre-trained model, seed by seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from dprope.reproduce.config import Reproduction
from dprope.reproduce.stages import Stage, StageFailed, StageStore, _write_json

log = logging.getLogger(__name__)

EXPORT = "hf"  # the trainer's export directory inside a training stage


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


class Pipeline:
    """The stages of one reproduction, in the order they run (seed by seed)."""

    def __init__(self, repro: Reproduction):
        self.repro = repro
        self.root = Path(repro.reproduce.output_dir)
        self.store = StageStore(self.root)
        cfg = repro.reproduce
        corpus = self._corpus()
        self.stages: list[Stage] = [corpus, self._analysis()]
        for seed in cfg.seeds:
            pretrain = self._pretrain(seed, corpus)
            self.stages.append(pretrain)
            export = self.root / pretrain.name / EXPORT
            if cfg.precision.enabled:
                self.stages.append(self._precision(seed, export, pretrain))
            for name in cfg.measure.training_free:
                self.stages.append(self._measure(f"seed{seed}/free/{name}", export, name, pretrain))
            runs = [(name, "causal") for name in cfg.finetune.strategies]
            runs += [(name, mode) for name in cfg.attention.strategies for mode in cfg.attention.modes]
            for name, mode in runs:
                label = name if mode == "causal" else f"{name}-{mode}"
                finetune = self._finetune(seed, name, mode, label, export, corpus, pretrain)
                self.stages.append(finetune)
                tuned = self.root / finetune.name / EXPORT
                self.stages.append(self._measure(f"seed{seed}/tuned/{label}", tuned, None, finetune))

    # -- the stages -------------------------------------------------------------------------

    def _corpus(self) -> Stage:
        repro = self.repro
        synthetic = repro.reproduce.synthetic
        key = {
            "stage": "corpus",
            "data": _plain(repro.data),
            "synthetic": _plain(synthetic),
            "length": repro.length,
        }

        def run(directory: Path) -> dict[str, Any]:
            from dprope.data.sources import load_documents
            from dprope.reproduce.corpus import CORPUS_FILE, write_corpus
            from dprope.reproduce.synthetic import overhead_chars

            documents = load_documents(
                repro.data, repro.data.train_split, "data.train_split", streaming=False
            )
            texts = (row["text"] for row in documents)
            # BOS and EOS keep each synthetic document within L tokens (byte tokenizer)
            return write_corpus(
                texts,
                directory / CORPUS_FILE,
                synthetic.share,
                synthetic.piece_chars,
                synthetic.seed,
                synthetic.key_length,
                overhead_chars(synthetic.key_length),
                repro.length - 2,
            )

        return Stage("corpus", key, run)

    @property
    def corpus_file(self) -> str:
        from dprope.reproduce.corpus import CORPUS_FILE

        return str((self.root / "corpus" / CORPUS_FILE).resolve())

    def _analysis(self) -> Stage:
        repro = self.repro
        geometry = repro.pretrained_model("unused")
        rope = repro.rope("dprope")
        key = {
            "stage": "analysis",
            "head_dim": geometry.head_dim,
            "rope_theta": geometry.rope_theta,
            "length": repro.length,
            "rope": _plain(rope),
        }

        def run(directory: Path) -> dict[str, Any]:
            from dprope.rope.plots import write_figures
            from dprope.rope.report import AnalysisConfig, format_table, run_analysis, write_json

            model = dataclasses.replace(geometry, pretrained=None, tokenizer="byte")
            result = run_analysis(model, rope, AnalysisConfig(num_intervals=repro.reproduce.num_intervals))
            write_json(result, directory)
            write_figures(result, directory, 4)
            (directory / "table.txt").write_text(format_table(result) + "\n")
            return {
                "disturbance": {n: r.disturbance for n, r in result.strategies.items()},
                "scaled_dims": {
                    n: 2 * int((r.scaling.scaling_factors > 1 + 1e-6).sum())
                    for n, r in result.strategies.items()
                },
            }

        return Stage("analysis", key, run)

    def _run_config(
        self, directory: Path, model, rope, max_length: int, seed: int, phase, attention: str = "causal"
    ) -> Any:
        from dprope.tracking import LoggerConfig
        from dprope.train.config import RunConfig

        repro = self.repro
        trainer = dataclasses.replace(
            repro.trainer,
            output_dir=str(directory),
            steps=phase["steps"],
            global_batch_size=phase["global_batch_size"],
            micro_batch_size=phase["micro_batch_size"],
            lr=phase["lr"],
            warmup_steps=phase["warmup_steps"],
            seed=repro.trainer.seed + seed,
            resume="auto",  # a killed stage continues from its own latest checkpoint
            export=True,
            attention=attention,
        )
        # the seed changes the init only: the data order stays, so one packed cache per length serves all
        data = repro.training_data(self.corpus_file, max_length)
        return RunConfig(model=model, rope=rope, data=data, trainer=trainer, logger=LoggerConfig())

    def _training_stage(self, name: str, run_config_for, upstream: list[Stage]) -> Stage:
        # the key holds the run without the paths inside the run directory (the upstream digests
        # stand for the corpus and the pre-trained model), so a moved run directory stays valid
        sample = run_config_for(Path("."))
        key = {"stage": "train", "run": _plain(sample), "upstream": [u.digest for u in upstream]}
        key["run"]["trainer"].pop("output_dir")
        key["run"]["model"].pop("pretrained")
        key["run"]["data"].pop("paths")

        def run(directory: Path) -> dict[str, Any]:
            from dprope.train.loop import train

            run_config = run_config_for(directory)
            code = train(run_config, _plain(run_config))
            if code:
                raise StageFailed(
                    name, f"the trainer exited with code {code} (log and metrics in {directory})"
                )
            metrics = [
                json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line
            ]
            return {
                "steps": run_config.trainer.steps,
                "tokens": run_config.trainer.steps
                * run_config.trainer.global_batch_size
                * run_config.data.max_length,
                "attention": run_config.trainer.attention,
                "final_loss": metrics[-1]["loss"] if metrics else None,
                "losses": [m["loss"] for m in metrics],
                # the optimizer steps alone (metrics.jsonl), without set-up, checkpoints and export
                "step_seconds": sum(m["step_time_s"] for m in metrics),
            }

        return Stage(name, key, run)

    def _pretrain(self, seed: int, corpus: Stage) -> Stage:
        from dprope.rope.registry import default_config

        repro = self.repro
        phase = dataclasses.asdict(repro.reproduce.pretrain)
        model = dataclasses.replace(repro.model, original_max_position_embeddings=repro.length)
        return self._training_stage(
            f"seed{seed}/pretrain",
            lambda d: self._run_config(d, model, default_config("none", 1.0), repro.length, seed, phase),
            [corpus],
        )

    def _finetune(
        self, seed: int, strategy: str, mode: str, label: str, export: Path, corpus: Stage, pretrain: Stage
    ) -> Stage:
        repro = self.repro
        ft = repro.reproduce.finetune
        phase = {
            "steps": repro.finetune_steps,
            "global_batch_size": ft.global_batch_size,
            "micro_batch_size": ft.micro_batch_size,
            "lr": ft.lr,
            "warmup_steps": 0,
        }
        model = repro.pretrained_model(str(export))
        rope = repro.rope(strategy)
        return self._training_stage(
            f"seed{seed}/finetune/{label}",
            lambda d: self._run_config(d, model, rope, repro.target_length, seed, phase, mode),
            [corpus, pretrain],
        )

    def _measure(self, name: str, model_dir: Path, strategy: str | None, upstream: Stage) -> Stage:
        repro = self.repro
        rope = repro.rope(strategy) if strategy else None
        key = {
            "stage": "measure",
            "rope": _plain(rope),
            "lengths": repro.lengths,
            "stride": repro.stride,
            "measure": _plain(repro.reproduce.measure),
            "document_tokens": repro.document_tokens,
            "data": _plain(repro.data),
            "upstream": upstream.digest,
        }

        def run(directory: Path) -> dict[str, Any]:
            from dprope.eval.loading import load_with_strategy
            from dprope.reproduce.measure import measure
            from dprope.reproduce.retrieval import retrieval

            cfg = repro.reproduce.measure
            model, checkpoint = load_with_strategy(repro.pretrained_model(str(model_dir)), rope)
            result = measure(model, self.documents, repro.lengths, repro.stride, repro.length, cfg.batch_size)
            result["retrieval"] = retrieval(
                model,
                self.tokenizer,
                repro.reproduce.synthetic.key_length,
                repro.lengths,
                cfg.retrieval.depths,
                cfg.retrieval.trials,
                cfg.retrieval.seed,
                cfg.batch_size,
            )
            result["model"] = checkpoint.name
            result["rope_parameters"] = dict(checkpoint.hf_config.rope_parameters)
            _write_json(directory / "metrics.json", result)
            return {
                "perplexity": result["perplexity"],
                "mean_loss": result["mean_loss"],
                "retrieval": result["retrieval"]["accuracy"],
                "retrieval_grid": result["retrieval"]["grid"],
            }

        return Stage(name, key, run)

    def _precision(self, seed: int, export: Path, pretrain: Stage) -> Stage:
        repro = self.repro
        cfg = repro.reproduce.precision
        length = cfg.length or repro.target_length
        key = {"stage": "precision", "precision": _plain(cfg), "length": length, "upstream": pretrain.digest}

        def run(directory: Path) -> dict[str, Any]:
            import torch
            from transformers import AutoModelForCausalLM

            from dprope.eval.loading import load_with_strategy
            from dprope.rope.precision_analysis import PrecisionConfig, format_table, measure, write_json

            settings = PrecisionConfig(
                length=length, shift=cfg.shift, buckets=cfg.buckets, device="cpu", figures=False
            )
            trained, _ = load_with_strategy(repro.pretrained_model(str(export)), None, device="cpu")
            torch.manual_seed(repro.trainer.seed + seed)  # the reference: an untrained model, seeded
            untrained = AutoModelForCausalLM.from_config(trained.config, dtype=torch.float32).eval()
            summary = {}
            for name, model in (("trained", trained), ("random_init", untrained)):
                result = measure(model, settings, model.config.vocab_size)
                write_json(result, directory / name)
                (directory / name / "table.txt").write_text(format_table(result) + "\n")
                summary[name] = {
                    "bucket_edges": result.bucket_edges,
                    "logit_deviation": result.logit_deviation,
                    "mean_logit_deviation": result.mean_logit_deviation,
                    "first_token_share": result.first_token_share,
                }
            return summary

        return Stage(f"seed{seed}/precision", key, run)

    @cached_property
    def tokenizer(self):
        from dprope.data.tokenizer import load_tokenizer

        return load_tokenizer(self.repro.model.tokenizer_name)

    @cached_property
    def documents(self) -> list[list[int]]:
        """The evaluation documents, tokenized once per run: the first ``measure.documents`` of
        the split with at least s x L tokens, cut to ``document_tokens``."""
        from dprope.data import eval_documents

        repro = self.repro
        cfg = repro.reproduce.measure
        docs = [
            d[: repro.document_tokens]
            for d in eval_documents(repro.data, self.tokenizer, cfg.split, repro.target_length, cfg.documents)
        ]
        if not docs:
            raise StageFailed("documents", f"no {cfg.split} document has {repro.target_length} tokens")
        return docs

    # -- running ----------------------------------------------------------------------------

    def run(self) -> Path:
        """Run every stage not done yet, then write the report; returns the report's path.

        On a failing stage the report of the finished stages is still written (a failure to
        write it is logged, never hiding the stage's), then the stage's failure is raised."""
        start = time.perf_counter()
        try:
            for stage in self.stages:
                self.store.run(stage)
        except StageFailed:
            try:
                self.write_report(time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001
                log.warning("report of the finished stages not written: %s", err)
            raise
        return self.write_report(time.perf_counter() - start)

    def write_report(self, wall_s: float) -> Path:
        """report.md, results.json and the figures from the stages done so far."""
        from dprope.reproduce.report import write_report

        done = {s.name: self.store.finished(s) for s in self.stages}
        records = {name: record for name, record in done.items() if record}
        return write_report(self.repro, self.root, records, wall_s, len(self.stages))
