"""Stage h: `report.md` and `results.json` from the finished stages' records, plus the figures.

The report opens with the verdict (`dprope.reproduce.verdict`), then the tables in the paper's
shape: one row per strategy, perplexity and retrieval accuracy by evaluation length,
training-free (the paper's Table 10) and fine-tuned (Table 1, with the ``none`` control); each
cell is the mean over seeds with the sample standard deviation (n - 1). The paired differences
between strategies follow, then the attention stage, the precision stage and the wall time.
"""

from __future__ import annotations

import statistics
from itertools import pairwise
from pathlib import Path
from typing import Any

from dprope.reproduce.config import Reproduction
from dprope.reproduce.results import (
    Measurement,
    collect,
    format_cell,
    label,
    mean_grid,
    measurements,
    seed_values,
)
from dprope.reproduce.stages import _write_json
from dprope.reproduce.statistics import format_interval, paired_interval, verdict
from dprope.reproduce.synthetic import chance_accuracy
from dprope.reproduce.verdict import (
    PAIRS,
    compare,
    display,
    learned,
    learned_sentence,
    range_sentence,
    verdict_paragraph,
)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cells: list[str]) -> list[str]:
    return [_row(cells), "|" + "|".join(["---"] + ["---:"] * (len(cells) - 1)) + "|"]


def strategy_table(repro: Reproduction, entries: dict[str, Any], disturbance: dict[str, float]) -> str:
    shown = measurements(repro)
    lines = _header(["strategy", "disturbance", *[m.label for m in shown], "seeds"])
    for name, entry in entries.items():
        dist = disturbance.get(name.split("-")[0])
        cells = [name, "-" if dist is None else f"{dist:.1f}"]
        cells += [format_cell(seed_values(entry, m.key), m.digits, m.scale) for m in shown]
        lines.append(_row([*cells, str(len(entry["by_seed"]))]))
    return "\n".join(lines)


def depth_table(repro: Reproduction, entries: dict[str, Any], length: int) -> str:
    """Retrieval accuracy (%) at one length by depth of the key line, mean over seeds."""
    depths = [f"{d:g}" for d in repro.reproduce.measure.retrieval.depths]
    lines = _header(["strategy", *[f"depth {d}" for d in depths]])
    for name, entry in entries.items():
        grid = mean_grid(entry).get(str(length))
        if grid:
            lines.append(_row([name, *[f"{100 * grid[d]:.0f}" for d in depths]]))
    return "\n".join(lines)


def paired_table(repro: Reproduction, entries: dict[str, Any], setting: str) -> str:
    """Rows: measurements; columns: the strategy pairs present; cells: mean difference [95% CI]
    and what the interval says of the first strategy."""
    pairs = [(a, b) for a, b in PAIRS if a in entries and b in entries]
    if not pairs:
        return "(fewer than two of dprope, yarn, pi, none measured)"
    lines = _header(["measurement", *[f"{display(a)} − {display(b)}" for a, b in pairs]])
    for m in measurements(repro):
        cells = [m.label]
        for a, b in pairs:
            comparison = compare(entries, setting, m, a, b)
            if comparison is None:
                cells.append("-")
            else:
                cells.append(f"{format_interval(comparison.interval, m.digits, m.scale)} {comparison.word}")
        lines.append(_row(cells))
    return "\n".join(lines)


def verdict_text(repro: Reproduction, results: dict[str, Any]) -> str:
    target = str(repro.target_length)
    ppl = Measurement(("perplexity", target), f"PPL @ {target}", True)
    tuned, free = results["tuned"], results["free"]

    def ordering(entries: dict[str, Any], setting: str):
        return compare(entries, setting, ppl, "dprope", "yarn"), compare(entries, setting, ppl, "yarn", "pi")

    retrieval = []
    for n in sorted({min(2 * repro.length, repro.target_length), repro.target_length}):
        m = Measurement(("retrieval", str(n)), f"retrieval @ {n}", False, 100.0, 1)
        for entries, setting in ((tuned, "fine-tuned"), (free, "training-free")):
            title = f"Retrieval at {n} ({setting}, exact match)"
            retrieval.append((title, [compare(entries, setting, m, "dprope", b) for b in ("yarn", "pi")]))
    within = seed_values(free.get("none", {"by_seed": {}}), ("retrieval", str(repro.length)))
    chance = chance_accuracy(repro.reproduce.synthetic.key_length)
    sentence = learned_sentence(within, repro.length, chance)
    if within and not learned(within, chance):
        # accuracies near chance: their range, not a comparison per pair (those stay in the tables)
        beyond = [n for n in repro.lengths if n > repro.length]
        means = {
            f"{name}, {setting}": statistics.fmean(values)
            for entries, setting in ((free, "training-free"), (tuned, "fine-tuned"))
            for name, entry in entries.items()
            for values in [[v for n in beyond for v in seed_values(entry, ("retrieval", str(n)))]]
            if values
        }
        sentence += " " + range_sentence(f"Retrieval at {' and '.join(map(str, beyond))}", means)
        retrieval = []
    return verdict_paragraph(
        ordering(tuned, "fine-tuned"),
        ordering(free, "training-free"),
        retrieval,
        repro.target_length,
        sentence,
    )


def attention_table(repro: Reproduction, results: dict[str, Any]) -> str:
    cfg = repro.reproduce.attention
    target = str(repro.target_length)
    shown = [
        Measurement(("perplexity", target), f"PPL @ {target}", True),
        Measurement(("retrieval", str(repro.length)), f"retrieval @ {repro.length} (%)", False, 100.0, 1),
        Measurement(("retrieval", target), f"retrieval @ {target} (%)", False, 100.0, 1),
    ]
    lines = _header(
        [
            "strategy",
            "attention",
            "stage wall (s)",
            "optimizer steps (s)",
            "final loss",
            *[m.label for m in shown],
        ]
    )
    for strategy in cfg.strategies:
        for mode in ["causal", *cfg.modes]:
            name = label(strategy, mode)
            runs = results["training"].get(name, {})
            entry = results["tuned"].get(name, {"by_seed": {}})
            cells = [
                display(strategy),
                mode,
                format_cell([r["wall_s"] for r in runs.values()], 1),
                format_cell([r["step_s"] for r in runs.values() if r["step_s"] is not None], 1),
                format_cell([r["final_loss"] for r in runs.values() if r["final_loss"] is not None], 3),
                *[format_cell(seed_values(entry, m.key), m.digits, m.scale) for m in shown],
            ]
            lines.append(_row(cells))
    lines += [
        "",
        *_header(["paired difference (mode − causal)", *[m.label for m in shown], "optimizer steps (s)"]),
    ]
    for strategy in cfg.strategies:
        for mode in cfg.modes:
            a, b = label(strategy, mode), strategy
            cells = [f"{display(strategy)}: {mode} − causal"]
            for m in shown:
                comparison = compare(results["tuned"], "fine-tuned", m, a, b)
                cells.append(
                    "-"
                    if comparison is None
                    else f"{format_interval(comparison.interval, m.digits, m.scale)} {comparison.word}"
                )
            runs_a, runs_b = results["training"].get(a, {}), results["training"].get(b, {})
            seeds = [s for s in runs_a if s in runs_b and runs_a[s]["step_s"] and runs_b[s]["step_s"]]
            interval = paired_interval(
                [runs_a[s]["step_s"] for s in seeds], [runs_b[s]["step_s"] for s in seeds]
            )
            cells.append(
                "-" if interval is None else f"{format_interval(interval, 1)} {verdict(interval, True)}"
            )
            lines.append(_row(cells))
    return "\n".join(lines)


def precision_table(results: dict[str, Any]) -> str:
    runs = list(results["precision"].values())
    if not runs:
        return "(not run)"
    edges = runs[0]["trained"]["bucket_edges"]
    heads = [f"{a}-{b - 1}" for a, b in pairwise(edges)]
    lines = _header(["model", "setting", *heads, "all", "first-token share"])
    for model in ("trained", "random_init"):
        for setting in runs[0][model]["logit_deviation"]:
            rows = [r[model]["logit_deviation"][setting] for r in runs]
            buckets = [statistics.fmean(col) for col in zip(*rows, strict=True)]
            overall = statistics.fmean(r[model]["mean_logit_deviation"][setting] for r in runs)
            share = format_cell([r[model]["first_token_share"][setting] for r in runs], 1, 100.0)
            lines.append(
                _row(
                    [
                        "pre-trained" if model == "trained" else "random init",
                        setting,
                        *[f"{v:.2e}" for v in buckets],
                        f"{overall:.2e}",
                        f"{share} %",
                    ]
                )
            )
    return "\n".join(lines)


STAGE_GROUPS = {
    "corpus": "a. training corpus (synthetic mix)",
    "analysis": "b. disturbance table",
    "pretrain": "c. pre-training",
    "precision": "d. precision (shift analysis)",
    "free": "e. training-free measurements",
    "finetune": "f. fine-tuning, causal",
    "finetune-masked": "g. fine-tuning, document and anchor",
    "tuned": "f-g. fine-tuned measurements",
}


def stage_times(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for name, record in records.items():
        parts = name.split("/")
        group = parts[0] if len(parts) == 1 else parts[1]
        if group == "finetune" and record["summary"].get("attention", "causal") != "causal":
            group = "finetune-masked"
        groups[group] = groups.get(group, 0.0) + record["elapsed_s"]
    return groups


def _in_stage_order(times: dict[str, float]) -> list[tuple[str, float]]:
    order = list(STAGE_GROUPS)
    return sorted(times.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (tokenizer workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _settings(repro: Reproduction, results: dict[str, Any]) -> list[str]:
    cfg, model = repro.reproduce, repro.model
    pre, ft, synthetic, retrieval = cfg.pretrain, cfg.finetune, cfg.synthetic, cfg.measure.retrieval
    pre_tokens = pre.steps * pre.global_batch_size * repro.length
    ft_tokens = repro.finetune_steps * ft.global_batch_size * repro.target_length
    corpus = results["corpus"]
    mix = (
        f"{corpus['corpus_pieces']:,} pieces of at most {synthetic.piece_chars} characters "
        f"({corpus['corpus_bytes']:,} bytes) and {corpus['synthetic_documents']:,} synthetic passkey "
        f"documents of at most {repro.length - 2} characters ({corpus['synthetic_bytes']:,} bytes, "
        f"{100 * corpus['synthetic_share']:.1f}% of the bytes)"
        if corpus
        else "not written yet"
    )
    final = ", ".join(f"{v:.3f}" for v in results["pretrain"].values() if v is not None)
    return [
        f"- model: Llama-family `{model.name}` from scratch, {model.num_hidden_layers} layers, hidden "
        f"{model.hidden_size}, {model.num_attention_heads} heads of dimension {model.head_dim}, "
        f"RoPE base {model.rope_theta:g}, vocabulary {model.vocab_size} (tokenizer `{model.tokenizer_name}`)",
        f"- training corpus: `{repro.data.name}` split `{repro.data.train_split}` cut into {mix}; "
        f"perplexity measured on `{cfg.measure.split}` of `{repro.data.name}` (no synthetic documents)",
        f"- L = {repro.length}, s = {cfg.factor:g}, s x L = {repro.target_length}",
        f"- c. pre-training: {pre.steps} steps x {pre.global_batch_size} sequences x {repro.length} tokens = "
        f"{pre_tokens:,} tokens, lr {pre.lr:g} after {pre.warmup_steps} warmup steps; final loss per seed: {final}",
        f"- f. fine-tuning, each strategy (`none` is the control: the same tokens, no scaling): "
        f"{repro.finetune_steps} steps x {ft.global_batch_size} sequences x {repro.target_length} tokens = "
        f"{ft_tokens:,} tokens (budget {ft.tokens:,}), lr {ft.lr:g} constant, the same corpus",
        f"- g. attention stage: {', '.join(map(display, cfg.attention.strategies)) or 'none'} fine-tuned again "
        f"with `trainer.attention` = {', '.join(cfg.attention.modes) or '-'}, the same tokens",
        f"- seeds: {', '.join(map(str, cfg.seeds))} (each pre-trains one model that all its strategies "
        "start from; data order fixed)",
        f"- perplexity: sliding window (stride {repro.stride}) at {', '.join(map(str, repro.lengths))} over "
        f"{cfg.measure.documents} documents of at least {repro.target_length} tokens, cut to "
        f"{repro.document_tokens}; loss by position over each document's first {repro.target_length} tokens",
        f"- retrieval: passkey prompts of exactly L, 2L, s x L tokens, key line at depths "
        f"{', '.join(f'{d:g}' for d in retrieval.depths)}, {retrieval.trials} keys per cell (seed "
        f"{retrieval.seed}, the same for every strategy and seed); exact match of the "
        f"{synthetic.key_length}-character key (digits and capitals alternating; chance "
        f"{100 * chance_accuracy(synthetic.key_length):.2f}%) under greedy decoding",
        f"- disturbance: 1000 x mean over pairs of KL(P_pretrain || P_extended), B = {cfg.num_intervals}; "
        "DPRoPE "
        + (
            f"k = {cfg.num_interpolated_dims}"
            if cfg.num_interpolated_dims is not None
            else "per-pair argmin (t = 0)"
        ),
    ]


def render(
    repro: Reproduction,
    results: dict[str, Any],
    records: dict,
    wall_s: float,
    num_stages: int,
    cpu_s: float | None = None,
) -> str:
    cfg = repro.reproduce
    target = repro.target_length
    status = (
        "complete" if len(records) == num_stages else f"partial: {len(records)} of {num_stages} stages done"
    )
    causal = {n: results["tuned"][n] for n in cfg.finetune.strategies if n in results["tuned"]}
    times = stage_times(records)
    out = [
        "# Small-scale reproduction: training-free and fine-tuned context extension",
        "",
        f"Status: {status}.",
        "",
        verdict_text(repro, results),
        "",
        "## Settings",
        "",
        *_settings(repro, results),
        "",
        "Cells: mean ± sample standard deviation over the seeds that finished; retrieval in %.",
        "",
        "## Training-free (the paper's Table 10 at small scale)",
        "",
        strategy_table(repro, results["free"], results["disturbance"]),
        "",
        f"## Fine-tuned at s x L = {target}, causal attention (the paper's Table 1 at small scale)",
        "",
        strategy_table(repro, causal, results["disturbance"]),
        "",
        f"## Retrieval at s x L = {target} by depth of the key line (%, mean over seeds)",
        "",
        "Training-free:",
        "",
        depth_table(repro, results["free"], target),
        "",
        "Fine-tuned:",
        "",
        depth_table(repro, causal, target),
        "",
        "## Paired differences (per seed, then mean and 95% t-interval)",
        "",
        "Each cell: mean of the per-seed differences [95% Student t-interval], then what the interval says "
        "of the first strategy (lower perplexity and loss, higher retrieval are better).",
        "",
        "Training-free:",
        "",
        paired_table(repro, results["free"], "training-free"),
        "",
        "Fine-tuned:",
        "",
        paired_table(repro, causal, "fine-tuned"),
        "",
        "## Attention during fine-tuning: causal, document, anchor (AnchorAttention)",
        "",
        attention_table(repro, results) if cfg.attention.strategies and cfg.attention.modes else "(not run)",
        "",
        "## Precision: attention logits with positions shifted, pre-trained model (stage d)",
        "",
        f"Mean |logit(shifted by {cfg.precision.shift}) − logit| by query-position bucket, mean over seeds; "
        "first-token share: the first token's part of the attention-probability difference (mean ± sd).",
        "",
        precision_table(results),
        "",
        "## Wall time",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {STAGE_GROUPS.get(k, k)} | {v:.0f} |" for k, v in _in_stage_order(times)],
        f"| all stages (sum of their last runs) | {sum(times.values()):.0f} |",
        f"| this invocation (skipped stages cost nothing) | {wall_s:.0f} |",
        *([f"| this invocation, CPU time (user + system) | {cpu_s:.0f} |"] if cpu_s is not None else []),
        "",
        "Figures: `ppl_by_length.png`, `loss_by_position.png` (L marked), `disturbance_vs_perplexity.png`, "
        "`retrieval_heatmap.png` (depth x length, every strategy); the disturbance table in full: "
        "`analysis/table.txt`; per-seed precision tables: `seed<n>/precision/*/table.txt`.",
        "",
    ]
    return "\n".join(out)


def write_report(
    repro: Reproduction, root: Path, records: dict[str, dict[str, Any]], wall_s: float, num_stages: int
) -> Path:
    from dprope.reproduce.plots import write_figures

    root.mkdir(parents=True, exist_ok=True)
    results = collect(repro, root, records)
    write_figures(repro, results, root)
    plain = {
        kind: {n: {k: v for k, v in e.items() if k != "curves"} for n, e in results[kind].items()}
        for kind in ("free", "tuned")
    }
    cpu_s = cpu_seconds()
    _write_json(
        root / "results.json",
        {
            **plain,
            "training": results["training"],
            "precision": results["precision"],
            "corpus": results["corpus"],
            "disturbance": results["disturbance"],
            "lengths": repro.lengths,
            "stage_seconds": {name: r["elapsed_s"] for name, r in records.items()},
            "wall_s": wall_s,
            "cpu_s": cpu_s,
        },
    )
    path = root / "report.md"
    path.write_text(render(repro, results, records, wall_s, num_stages, cpu_s))
    return path
