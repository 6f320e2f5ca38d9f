"""The reproduction protocol's analysis: which learning rate each method gets, whether the paper's claims hold,
the ablations, the layer figure and the learning curves, from the protocol's sweeps.

    idspam-protocol <tune sweep> --write-tuned conf/tuned/protocol_sst2.yaml   (python -m idspam protocol ...)
    idspam-protocol <sweeps...> --out experiments/results/protocol

A sweep belongs to a stage by its experiment name (`protocol_<stage>`: tune, main, layers, ablations, curves);
an ablation job names its variant (`variant`, from conf/variant/). Every score is the one at the run's best
epoch, picked on the held-out split carved from training (task.heldout_samples), never on the dev set reported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import missing_extra
from ..files import atomic_write_text
from . import stats
from .paper import PAPER

STAGES = ("tune", "main", "layers", "ablations", "curves")
BASE = "idspam"  # the method every claim is about
METHOD_NAMES = {"idspam": "ID-SPAM", "idspam_meanpool": "ID-SPAM, mean pooling", "lpt": "LPT",
                "prompt_tuning": "prompt tuning", "lora": "LoRA", "ptuning": "P-tuning", "smop": "SMoP",
                "dept": "DEPT", "finetune": "fine-tuning"}
TASK_NAMES = {"sst2": "SST-2", "imdb": "IMDB", "mrpc": "MRPC", "rte": "RTE", "qqp": "QQP", "qnli": "QNLI",
              "mnli": "MNLI", "cb": "CB", "boolq": "BoolQ"}
TIME_TO_BEST_PAPER = -7.3  # PAPER.md: ID-SPAM's time to convergence, % against LPT's (RoBERTa-large, its average)


def display(task: str) -> str:
    return TASK_NAMES.get(task, task)


@dataclass
class Run:
    """One finished job of the protocol, read from its results.json."""

    path: Path
    stage: str
    task: str
    method: str
    variant: str
    layer: int
    seed: int
    lr: float
    epochs: list[dict]
    best_epoch: int
    monitor: str
    table_metric: str
    wall_time_s: float
    config: dict = field(repr=False, default_factory=dict)

    def at_best(self, metric: str) -> float | None:
        epoch = next(e for e in self.epochs if e["epoch"] == self.best_epoch)
        return epoch.get(metric)

    @property
    def dev(self) -> float:
        return 100 * self.at_best(self.table_metric)

    @property
    def heldout(self) -> float:
        return 100 * self.at_best(self.monitor)

    @property
    def seconds_to_best(self) -> float:
        """Training time (forward, backward, step; no evaluation) up to the end of the best epoch."""
        return sum(e["train_seconds"] for e in self.epochs if e["epoch"] <= self.best_epoch)

    def predictions(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-example predictions and labels of a split at the best epoch."""
        path = self.path / "predictions" / f"epoch{self.best_epoch}.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing (the paired bootstrap over dev examples needs the run's "
                             "predictions at its best epoch; archive sweeps with experiments/archive_sweep.py)")
        data = json.loads(path.read_text())[split]
        return np.asarray(data["pred"]), np.asarray(data["label"])


def read_runs(dirs: list[Path]) -> list[Run]:
    """Every finished protocol job under `dirs` (sweep dirs, or folders holding them)."""
    runs = []
    for d in dirs:
        if not d.exists():
            raise SystemExit(f"error: {d} does not exist")
        for path in sorted(d.rglob("results.json")):
            r = json.loads(path.read_text())
            stage = (r.get("experiment") or "").removeprefix("protocol_")
            if r.get("status") != "finished" or stage not in STAGES or not r.get("best"):
                continue
            cfg = r.get("config", {})
            method_cfg, opt = cfg.get("method", {}), cfg.get("optimizer", {})
            runs.append(Run(
                path=path.parent, stage=stage, task=r["task"], method=r["method"],
                variant=cfg.get("variant") or "default", layer=r["layer"], seed=r["seed"],
                lr=float(method_cfg.get("lr") or opt.get("lr")), epochs=r["epochs"], best_epoch=r["best"]["epoch"],
                monitor=r["monitor"], table_metric=r.get("table_metric") or r["monitor"],
                wall_time_s=float(r.get("wall_time_s") or 0), config=cfg))
    return runs


# ------------------------------------------------------------------ stage 1: the tuned learning rates

def tuning_table(runs: list[Run]) -> dict[str, dict[float, float]]:
    """method (or ablation variant) -> learning rate -> mean held-out score of the tuning runs."""
    scores: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.stage == "tune":
            scores[r.method if r.variant == "default" else r.variant][r.lr].append(r.heldout)
    return {m: {lr: float(np.mean(v)) for lr, v in sorted(by_lr.items())} for m, by_lr in scores.items()}


def select_lrs(runs: list[Run]) -> dict[str, float]:
    """Each method's learning rate: the best mean held-out score of its tuning runs (ties: the smaller rate)."""
    return {m: max(by_lr, key=lambda lr: (by_lr[lr], -lr)) for m, by_lr in tuning_table(runs).items()}


def tuned_yaml(runs: list[Run], source: str) -> str:
    table = tuning_table(runs)
    chosen = select_lrs(runs)
    lines = ["# @package _global_",
             "# Learning rates picked on the held-out split (never the dev set) by the protocol's tuning stage:",
             f"#   idspam-protocol {source} --write-tuned <this file>",
             "# mean held-out score per learning rate:"]
    for method, by_lr in table.items():
        lines.append(f"#   {method}: " + ", ".join(f"{lr:g} -> {v:.2f}" for lr, v in by_lr.items()))
    lines.append("tuned_lr:")
    lines += [f"  {method}: {lr!r}" for method, lr in chosen.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the claims

@dataclass
class Claim:
    name: str
    estimate: stats.Estimate
    paper: float | None  # the paper's effect in the same unit; None: its sign only (a figure)
    paper_note: str
    unit: str = "points"
    paper_sign: int = +1


def by_seed(runs: list[Run], value) -> dict[int, float]:
    out: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        out[r.seed].append(value(r))
    return {s: float(np.mean(v)) for s, v in out.items()}


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def select(runs: list[Run], stage: str | None = None, **where) -> list[Run]:
    return [r for r in runs
            if (stage is None or r.stage == stage) and all(getattr(r, k) == v for k, v in where.items())]


def main_runs(runs: list[Run], method: str) -> list[Run]:
    return select(runs, "main", method=method, variant="default")


def transfer_metric(run: Run) -> str | None:
    targets = run.config.get("eval_tasks") or []
    return f"{targets[0]}/acc_f1" if targets else None


def claims(runs: list[Run], task: str, draws: int = 10_000) -> list[Claim]:
    out = []
    base = main_runs(runs, BASE)
    dev = by_seed(base, lambda r: r.dev)
    for other, name in (("prompt_tuning", "ID-SPAM vs prompt tuning"), ("lpt", "ID-SPAM vs LPT"),
                        ("lora", "ID-SPAM vs LoRA")):
        paper = _paper_diff("roberta_base", task, BASE, other)
        theirs = by_seed(main_runs(runs, other), lambda r: r.dev)
        note = f"RoBERTa-base, {display(task)}: {_paper_pair('roberta_base', task, BASE, other)}"
        out.append(Claim(name, stats.seed_bootstrap(*paired(dev, theirs), draws=draws), paper, note))
    meanpool = by_seed(main_runs(runs, "idspam_meanpool"), lambda r: r.dev)
    ablation = [PAPER[("roberta_large", BASE, t)] - PAPER[("roberta_large", "idspam_meanpool", t)]
                for t in ("mrpc", "rte", "qqp")]
    out.append(Claim("self-attention vs mean pooling (ID-SPAM)",
                     stats.seed_bootstrap(*paired(dev, meanpool), draws=draws), float(np.mean(ablation)),
                     "RoBERTa-large, mean of MRPC / RTE / QQP (Table 3)"))
    out.append(best_layer_claim(runs, draws))
    metric = transfer_metric(base[0]) if base else None
    if metric:
        target = metric.split("/")[0]
        zs = {m: by_seed(main_runs(runs, m), lambda r: 100 * r.at_best(metric)) for m in (BASE, "prompt_tuning")}
        pair = f"{task}->{target}"
        paper = _paper_diff("roberta_large", pair, BASE, "prompt_tuning")
        out.append(Claim(f"{display(task)} -> {display(target)} zero-shot: ID-SPAM vs prompt tuning",
                         stats.seed_bootstrap(*paired(zs[BASE], zs["prompt_tuning"]), draws=draws), paper,
                         f"RoBERTa-large: {_paper_pair('roberta_large', pair, BASE, 'prompt_tuning')}"))
    times = {m: by_seed(main_runs(runs, m), lambda r: r.seconds_to_best) for m in (BASE, "lpt")}
    a, b = paired(times[BASE], times["lpt"])
    ratio = [100 * (x / y - 1) for x, y in zip(a, b, strict=True)]  # % more time than LPT, per seed
    out.append(Claim("time to the best epoch: ID-SPAM vs LPT",
                     stats.seed_bootstrap(ratio, [0.0] * len(ratio), draws=draws), TIME_TO_BEST_PAPER,
                     "RoBERTa-large, time to convergence (the paper's average)", unit="%", paper_sign=-1))
    return out


def best_layer_claim(runs: list[Run], draws: int = 10_000) -> Claim:
    """The best layer among 1..N-2 (picked on the held-out split, mean over seeds) against m = 0, on dev."""
    layered = [r for r in runs if r.method == BASE and r.variant == "default" and r.stage in ("layers", "main")]
    layers = layer_runs(layered)
    num_layers = (layered[0].config.get("model", {}).get("num_layers") or 0) if layered else 0
    candidates = [m for m in layers if 1 <= m <= num_layers - 2]
    name = "best layer in 1..N-2 vs m = 0 (ID-SPAM)"
    note = "RoBERTa-large layer figure: both methods peak at m = 11-13 of 24 (no number)"
    if 0 not in layers or not candidates:
        return Claim(name, stats.seed_bootstrap([], []), None, note)
    best = max(candidates, key=lambda m: np.mean([r.heldout for r in layers[m]]))
    dev = {m: by_seed(layers[m], lambda r: r.dev) for m in (best, 0)}
    est = stats.seed_bootstrap(*paired(dev[best], dev[0]), draws=draws)
    est.note = f"best m = {best} of {{{', '.join(map(str, candidates))}}} (held-out)"
    return Claim(name, est, None, note)


def layer_runs(runs: list[Run]) -> dict[int, list[Run]]:
    """Runs per layer; a (layer, seed) that both the main and the layer stage ran is counted once."""
    seen, out = set(), defaultdict(list)
    for r in sorted(runs, key=lambda r: r.stage != "main"):
        if (r.layer, r.seed) not in seen:
            seen.add((r.layer, r.seed))
            out[r.layer].append(r)
    return dict(sorted(out.items()))


def _paper_diff(model: str, column: str, a: str, b: str) -> float | None:
    if (model, a, column) in PAPER and (model, b, column) in PAPER:
        return round(PAPER[(model, a, column)] - PAPER[(model, b, column)], 2)
    return None


def _paper_pair(model: str, column: str, a: str, b: str) -> str:
    return f"{PAPER.get((model, a, column))} vs {PAPER.get((model, b, column))}"


# ------------------------------------------------------------------ ablations

def ablations(runs: list[Run], split: str, metric: str, draws: int = 2_000) -> list[tuple[str, stats.Estimate]]:
    """Each ablation variant against the default configuration, with the seeds both ran: a paired bootstrap
    over dev examples of the mean over seeds."""
    defaults = {r.seed: r for r in runs if r.method == BASE and r.variant == "default" and r.stage in ("main",
                                                                                                      "ablations")}
    out = []
    for variant in sorted({r.variant for r in runs if r.stage == "ablations" and r.variant != "default"}):
        mine = {r.seed: r for r in runs if r.stage == "ablations" and r.variant == variant}
        seeds = sorted(set(mine) & set(defaults))
        if not seeds:
            continue
        a = [mine[s].predictions(split) for s in seeds]
        b = [defaults[s].predictions(split) for s in seeds]
        label = a[0][1]
        out.append((variant, stats.example_bootstrap(np.stack([p for p, _ in a]), np.stack([p for p, _ in b]), label,
                                                     metric, draws=draws)))
    return out


# ------------------------------------------------------------------ figures

def layer_figure(runs: list[Run], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layered = [r for r in runs if r.variant == "default" and r.stage in ("layers", "main")]
    swept = {r.method for r in layered if r.stage == "layers"}
    methods = [m for m in (BASE, "lpt", "idspam_meanpool") if m in swept]
    if not methods:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers, offsets = ("o", "s", "^"), np.linspace(-0.1, 0.1, len(methods))
    for method, marker, dx in zip(methods, markers, offsets, strict=False):
        layers = layer_runs([r for r in layered if r.method == method])
        xs = np.array(list(layers)) + dx
        mean = [np.mean([r.dev for r in v]) for v in layers.values()]
        sd = [np.std([r.dev for r in v], ddof=1) if len(v) > 1 else 0 for v in layers.values()]
        n = min(len(v) for v in layers.values())
        ax.errorbar(xs, mean, yerr=sd, marker=marker, capsize=3, label=f"{METHOD_NAMES.get(method, method)} (n>={n})")
    for method, style in (("prompt_tuning", ":"), ("lora", "--")):
        vals = [r.dev for r in main_runs(runs, method)]
        if vals:
            ax.axhline(np.mean(vals), linestyle=style, color="grey", linewidth=1,
                       label=f"{METHOD_NAMES[method]} (no layer; mean of {len(vals)})")
    low, high = ax.get_ylim()  # room for the reference lines and, below the data, the legend
    ax.set_ylim(low - 0.35 * (high - low), high + 0.05 * (high - low))
    ax.set_xlabel("injection layer m")
    ax.set_ylabel("dev score at the best held-out epoch (%)")
    ax.set_xticks(sorted({r.layer for r in layered}))
    ax.set_title("Layer position (mean ± sd over seeds, x offsets separate the methods)", fontsize=9)
    ax.legend(fontsize=8, loc="lower center", ncol=2)
    fig.tight_layout()
    path = out / "layers.png"
    fig.savefig(path, dpi=130)
    fig.savefig(out / "layers.svg")
    plt.close(fig)
    return path


def curves_figure(runs: list[Run], out: Path) -> Path | None:
    """Dev score per epoch of the main runs (mean ± sd over seeds): where the runs stop learning; and, from the
    curves stage, the best dev score against the training-set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in runs if r.stage == "main" and r.variant == "default"]
    sized = [r for r in runs if r.stage == "curves"]
    if not main:
        return None
    fig, axes = plt.subplots(1, 2 if sized else 1, figsize=(11 if sized else 6.4, 4.2), squeeze=False)
    ax = axes[0][0]
    for method in sorted({r.method for r in main}, key=_method_order):
        rs = [r for r in main if r.method == method]
        epochs = min(len(r.epochs) for r in rs)
        curve = np.array([[100 * r.epochs[i][r.table_metric] for i in range(epochs)] for r in rs])
        x = np.arange(1, epochs + 1)
        ax.plot(x, curve.mean(0), marker="o", markersize=3, label=METHOD_NAMES.get(method, method))
        ax.fill_between(x, curve.mean(0) - curve.std(0), curve.mean(0) + curve.std(0), alpha=0.15)
    ax.set_xticks(range(1, max(len(r.epochs) for r in main) + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev score (%)")
    ax.set_title("Learning curves of the main runs (mean ± sd over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    if sized:
        ax = axes[0][1]
        for method in sorted({r.method for r in sized}, key=_method_order):
            seeds = {r.seed for r in sized if r.method == method}
            sizes = defaultdict(list)  # the main runs with the same seeds give the protocol's own size
            for r in sized + [r for r in main if r.method == method and r.seed in seeds]:
                if r.method == method:
                    sizes[r.config["task"]["max_train_samples"]].append(r.dev)
            xs = sorted(sizes)
            ax.errorbar(xs, [np.mean(sizes[x]) for x in xs],
                        yerr=[np.std(sizes[x], ddof=1) if len(sizes[x]) > 1 else 0 for x in xs],
                        marker="o", capsize=3, label=METHOD_NAMES.get(method, method))
        ax.set_xscale("log")
        ticks = sorted({r.config["task"]["max_train_samples"] for r in sized + main})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training examples")
        ax.set_ylabel("dev score at the best held-out epoch (%)")
        ax.set_title("Training-set size", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _method_order(method: str) -> int:
    order = list(METHOD_NAMES)
    return order.index(method) if method in order else len(order)


# ------------------------------------------------------------------ the report

def fmt(x: float | None, digits: int = 2, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def claims_table(decisions: list[tuple[Claim, stats.Decision]]) -> list[str]:
    lines = ["| claim | ours | 95% CI, Holm-corrected (level) | resampled | paper | verdict |",
             "|---|---|---|---|---|---|"]
    for claim, d in decisions:
        est = d.estimate
        unit = " %" if claim.unit == "%" else ""
        paper = (f"{fmt(claim.paper)}{unit} ({claim.paper_note})" if claim.paper is not None
                 else f"{'better' if claim.paper_sign > 0 else 'less'} ({claim.paper_note})")
        ci = (f"[{fmt(d.low)}, {fmt(d.high)}]{unit} ({100 * d.level:.1f}%)" if np.isfinite(d.low) else
              f"none: {est.note}")
        extra = f"; {est.note}" if est.note and np.isfinite(d.low) else ""
        lines.append(f"| {claim.name} | {fmt(est.effect)}{unit} | {ci} | {est.n} {est.unit}{extra} | {paper} | "
                     f"**{d.verdict}** |")
    return lines


def main_table(runs: list[Run]) -> list[str]:
    main = [r for r in runs if r.stage == "main" and r.variant == "default"]
    metric = transfer_metric(main[0]) if main else None
    head = "| method | lr | seeds | dev mean ± sd | held-out | " + (f"{metric.split('/')[0]} zero-shot | " if metric
                                                                     else "")
    lines = [head + "best epoch | s to best epoch |", "|" + "---|" * (7 + bool(metric))]
    for method in sorted({r.method for r in main}, key=_method_order):
        rs = [r for r in main if r.method == method]
        dev = [r.dev for r in rs]
        cells = [METHOD_NAMES.get(method, method), f"{rs[0].lr:g}", str(len(rs)),
                 f"{np.mean(dev):.2f} ± {np.std(dev, ddof=1) if len(dev) > 1 else 0:.2f}",
                 f"{np.mean([r.heldout for r in rs]):.2f}"]
        if metric:
            cells.append(f"{np.mean([100 * r.at_best(metric) for r in rs]):.2f}")
        cells += [f"{np.mean([r.best_epoch + 1 for r in rs]):.1f}", f"{np.mean([r.seconds_to_best for r in rs]):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ablation_lines(runs: list[Run], alpha: float = 0.05, draws: int = 2_000) -> list[str]:
    abl = [r for r in runs if r.stage == "ablations"]
    if not abl:
        return []
    split = abl[0].table_metric.split("/")[0]
    metric = abl[0].table_metric.split("/")[1]
    metric = metric if metric in stats.EXAMPLE_METRICS else "accuracy"
    results = ablations(runs, split, metric, draws)
    decisions = stats.decide([e for _, e in results], [+1] * len(results), alpha)
    lines = ["| variant (vs the default ID-SPAM) | seeds | Δ dev (points) | 95% CI, Holm-corrected (level) "
             "| reading |", "|---|---|---|---|---|"]
    for (variant, est), d in zip(results, decisions, strict=True):
        reading = ("better than the default" if d.low > 0 else "worse than the default" if d.high < 0 else
                   "no difference shown")
        seeds = len({r.seed for r in abl if r.variant == variant})
        lines.append(f"| {variant} | {seeds} | {fmt(100 * est.effect)} | [{fmt(100 * d.low)}, {fmt(100 * d.high)}] "
                     f"({100 * d.level:.1f}%) | {reading} |")
    return lines


def stage_times(runs: list[Run]) -> list[str]:
    lines = ["| stage | jobs | measured wall time (sum of the jobs' own wall times) |", "|---|---|---|"]
    for stage in STAGES:
        rs = [r for r in runs if r.stage == stage]
        if rs:
            lines.append(f"| {stage} | {len(rs)} | {sum(r.wall_time_s for r in rs) / 60:.1f} min |")
    return lines


def protocol_lines(runs: list[Run]) -> list[str]:
    r = next((r for r in runs if r.stage == "main"), runs[0])
    task, cfg = r.config.get("task", {}), r.config
    seeds = sorted({x.seed for x in runs if x.stage == "main"})
    return [
        f"- Backbone `{cfg['model']['name']}` (frozen), task `{r.task}`, {task.get('max_train_samples')} training "
        f"examples (a seeded subsample per run seed), a held-out split of {task.get('heldout_samples')} examples "
        f"carved from the training file (seed {task.get('heldout_seed')}, the same for every method and seed), "
        f"inputs cut to {task.get('max_length')} tokens, {cfg['trainer']['max_epochs']} epochs, batch "
        f"{cfg['data']['batch_size']}, injection layer m = {r.layer} where a method has one, "
        f"`cache_lower={cfg.get('cache_lower')}`.",
        f"- Seeds {seeds}: a seed fixes the training subsample, the initialisation and the data order, so runs of two "
        "methods with one seed are paired.",
        "- The best epoch is picked on the held-out split; every score below is the dev score at that epoch. Learning "
        "rates come from the tuning stage (the same grid, seed and held-out split for every method).",
    ]


def render(runs: list[Run], out: Path, alpha: float = 0.05, draws: int = 10_000) -> str:
    out.mkdir(parents=True, exist_ok=True)
    tasks = sorted({r.task for r in runs if r.stage == "main"})
    if not tasks:
        raise SystemExit("error: no finished runs of the protocol's main stage (experiment=protocol_main) found")
    task = tasks[0]
    found = claims([r for r in runs if r.task == task], task, draws)
    decisions = stats.decide([c.estimate for c in found], [c.paper_sign for c in found], alpha)
    lines = ["# The reproduction protocol: do the paper's claims hold?", ""]
    lines += protocol_lines(runs) + [""]
    lines += ["## Claims", "",
              "Effects are ID-SPAM minus the other side, in dev points (the time claim: ID-SPAM's time to its best "
              "epoch against LPT's, in %). Intervals: a percentile bootstrap over seeds (10,000 draws of the "
              "paired per-seed differences), Holm-corrected over the claims in this table (a claim's level is "
              "1 - 0.05/(number of claims not yet decided)); a verdict needs the interval on one side of 0.", ""]
    lines += claims_table(list(zip(found, decisions, strict=True))) + [""]
    lines += ["## Methods", ""] + main_table(runs) + [""]
    tuning = tuning_table(runs)
    if tuning:
        lines += ["## Tuning (held-out score per learning rate, the grid every method got)", "",
                  "| method | " + " | ".join(f"lr {lr:g}" for lr in sorted({lr for t in tuning.values() for lr in t}))
                  + " | chosen |", "|---" * (len({lr for t in tuning.values() for lr in t}) + 2) + "|"]
        grid = sorted({lr for t in tuning.values() for lr in t})
        chosen = select_lrs(runs)
        for method, by_lr in tuning.items():
            lines.append(f"| {METHOD_NAMES.get(method, method)} | "
                         + " | ".join(f"{by_lr[lr]:.2f}" if lr in by_lr else "–" for lr in grid)
                         + f" | {chosen[method]:g} |")
        lines.append("")
    abl = ablation_lines(runs, alpha, max(100, draws // 5))
    if abl:
        lines += ["## Ablations of the points the paper leaves open", "",
                  "Each variant against the default ID-SPAM with the same seeds: a paired bootstrap over dev examples "
                  "(2,000 draws; the metric's mean over the seeds), Holm-corrected over the variants.", ""] + abl + [""]
    no_plot = missing_extra("plot", "idspam-protocol's figures")
    if no_plot:  # the report does not need matplotlib: it is written, the figures skipped with one line
        print(f"note: {no_plot}; the figures are skipped", file=sys.stderr)
    figures = [] if no_plot else [f for f in (layer_figure(runs, out), curves_figure(runs, out)) if f]
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    lines += ["## Measured time", ""] + stage_times(runs) + [""]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "claims.json", json.dumps([
        {"claim": c.name, "effect": d.estimate.effect, "low": d.low, "high": d.high, "level": d.level,
         "resampled": f"{d.estimate.n} {d.estimate.unit}", "paper": c.paper, "verdict": d.verdict}
        for c, d in zip(found, decisions, strict=True)], indent=1, allow_nan=True))
    return text


EXAMPLES = """examples:
  idspam-protocol outputs/protocol/tune --write-tuned conf/tuned/protocol_sst2.yaml
  idspam-protocol experiments/results/protocol/sweeps --out experiments/results/protocol"""


def build_parser() -> argparse.ArgumentParser:
    from .cli import ArgumentParser

    parser = ArgumentParser(prog="idspam-protocol", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=EXAMPLES)
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep dirs of the protocol's stages, or folders above")
    parser.add_argument("--out", type=Path, help="write report.md, claims.json and the figures here")
    parser.add_argument("--write-tuned", type=Path, metavar="FILE",
                        help="write each method's learning rate picked from the tuning runs as a Hydra config")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of each table (Holm)")
    parser.add_argument("--draws", type=int, default=10_000, help="bootstrap draws over seeds (examples: a fifth)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out and not args.write_tuned:
        parser.error("nothing to do: give --out (the report) or --write-tuned (the tuned learning rates)")
    if not 0 < args.alpha < 1 or args.draws < 100:
        parser.error(f"--alpha {args.alpha} must lie in (0, 1) and --draws {args.draws} be at least 100")
    runs = read_runs(args.sweeps)
    if args.write_tuned:
        if not any(r.stage == "tune" for r in runs):
            parser.exit(2, f"error: no finished tuning runs (experiment=protocol_tune) under "
                           f"{' '.join(map(str, args.sweeps))}\n")
        grids = {m: sorted(by_lr) for m, by_lr in tuning_table(runs).items()}
        full = sorted({lr for g in grids.values() for lr in g})
        short = {m: sorted(set(full) - set(g)) for m, g in grids.items() if g != full}
        if short:  # every method gets the same budget: refuse to pick from an unfinished grid
            parser.exit(2, "error: the tuning grid is unfinished: " + "; ".join(
                f"{m} lacks lr {', '.join(f'{lr:g}' for lr in lrs)}" for m, lrs in short.items())
                + " (run the tuning sweep again: it trains only what is missing)\n")
        text = tuned_yaml(runs, " ".join(map(str, args.sweeps)))
        atomic_write_text(args.write_tuned, text)
        print(text, end="")
    if args.out:
        print(render(runs, args.out, alpha=args.alpha, draws=args.draws))
    return 0


if __name__ == "__main__":
    sys.exit(main())
