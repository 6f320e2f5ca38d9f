"""Tables (and the layer figure) from sweep outputs, with the paper's numbers beside ours.

    idspam-report outputs/multiruns/glue_base/<time> [more sweep or run dirs] [--out DIR] [--wandb]
        [--format md csv json]       # which files to write (default: md and csv)
        [--reference roberta_base]   # the paper's numbers of this model beside ours, for models it did not run

Every job's results.json is read and the jobs are grouped by experiment, model, method, layer and
column (a task, a transfer pair, or "parameters"). `report.md`, `report.csv` and `report.json` (in
`--out`, by default the first dir; `--format` picks which) give the mean ± std over seeds in percent, finished/expected
jobs, and the paper's number where the paper has one. Where a method ran at several layers, `layers.png` and
`layers.svg` plot the metric against the layer. Jobs that failed, stopped or never started are
listed, never dropped: the expected jobs come from the sweep's multirun.yaml.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError, missing_extra, require_extra
from ..files import atomic_write_text
from .paper import BEST_LAYERS, BEST_LAYERS_OF, GLUE_TASKS, PAPER, SUPERGLUE_TASKS, ZERO_SHOT_PAIRS

METHOD_ORDER = ("finetune", "lora", "prompt_tuning", "ptuning", "smop", "lpt", "dept", "idspam", "idspam_meanpool")
NO_PROMPT = ("lora", "finetune")  # methods without a prompt: no layer to show
COLUMN_ORDER = (*GLUE_TASKS, *SUPERGLUE_TASKS, *ZERO_SHOT_PAIRS)


@dataclass
class Job:
    """One job of a sweep: what it ran (from its results, its saved config or its overrides) and its scores."""

    sweep: Path
    num: int | None
    overrides: list[str]
    status: str = "missing"  # finished | failed | interrupted | running (stopped before the end) | missing
    error: str | None = None
    how_far: str | None = None  # an interrupted or killed job: the step (of all) and epoch it got to
    experiment: str | None = None
    model: str | None = None
    method: str | None = None
    layer: int | None = None
    seed: int | None = None
    budget: str | None = None  # the training budget ("5 epochs, 64 train samples"), from the job's config
    metrics: dict[str, str] = field(default_factory=dict)  # column -> metric name
    values: dict[str, float] = field(default_factory=dict)  # column -> score (percent) or count

    @property
    def where(self) -> str:
        return str(self.sweep) if self.num is None else f"{self.sweep}/{self.num}"


# ---------------------------------------------------------------- reading jobs

def expected_overrides(sweep: Path) -> list[list[str]]:
    """The jobs a multirun launched, in job order, from the sweep's multirun.yaml."""
    saved = yaml.safe_load((sweep / "multirun.yaml").read_text()) or {}
    hydra_cfg = saved.get("hydra") or {}
    return sweep_jobs((hydra_cfg.get("sweeper") or {}).get("params") or {},
                      list((hydra_cfg.get("overrides") or {}).get("task") or []))


def sweep_jobs(params: dict, overrides: list[str]) -> list[list[str]]:
    """Hydra's basic sweeper's expansion: `hydra.sweeper.params` and the command line's overrides -> jobs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def read_sweep(path: Path) -> list[Job]:
    """The jobs of a sweep dir (numbered job folders, expected jobs from multirun.yaml) or of one run dir."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no such sweep or run dir: {str(path)!r}")
    if (path / "results.json").is_file():
        return [read_job(path, None, path, [])]
    expected = expected_overrides(path) if (path / "multirun.yaml").is_file() else []
    numbers = {int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()}
    if not expected and not numbers:
        raise UserError(f"{str(path)!r} holds no results.json, numbered job dirs or multirun.yaml: "
                        "pass a sweep dir (outputs/multiruns/<name>/<time>) or a run dir")
    jobs = []
    for num in sorted(numbers | set(range(len(expected)))):
        overrides = expected[num] if num < len(expected) else []
        jobs.append(read_job(path / str(num), num, path, overrides))
    return jobs


def read_job(job_dir: Path, num: int | None, sweep: Path, overrides: list[str]) -> Job:
    job = Job(sweep=sweep, num=num, overrides=overrides)
    saved_overrides = job_dir / ".hydra" / "overrides.yaml"
    if saved_overrides.is_file():
        job.overrides = yaml.safe_load(saved_overrides.read_text()) or job.overrides
    results: dict = {}
    results_file = job_dir / "results.json"
    if results_file.is_file():
        try:
            results = json.loads(results_file.read_text())
            job.status = results.get("status", "running")
            if job.status == "running":
                job.error = "stopped before it finished (killed, or still running)"
        except json.JSONDecodeError:
            job.status, job.error = "failed", "results.json is unreadable"
    elif job_dir.is_dir():
        job.status, job.error = "running", "no results.json (stopped before training began, or still loading)"
    job.error = results.get("error", job.error)
    if job.status in ("interrupted", "running") and results:
        from ..runner.results import how_far

        job.how_far = how_far(results)
    run = run_info(results) or saved_config_info(job_dir)
    if run:
        describe(job, run)
        if job.status == "finished":
            score(job, results)
    return job


def describe_unstarted(jobs: list[Job]) -> None:
    """Jobs that never started (no results, no saved config): compose their configs from their overrides."""
    todo = [j for j in jobs if j.method is None and j.overrides]
    if not todo:
        return
    from ..runner.compose import compose

    composed: dict[tuple, dict | None] = {}  # the seed changes nothing else: compose once per other overrides
    for job in todo:
        seeds = [o for o in job.overrides if o.startswith("seed=")]
        key = tuple(o for o in job.overrides if not o.startswith(("hydra", "seed=")))
        if key not in composed:
            try:
                composed[key] = config_info(compose(list(key)))
            except Exception:  # overrides of another checkout's config: listed, without a group
                composed[key] = None
        if composed[key] is not None:
            info = dict(composed[key])
            if seeds:
                info["seed"] = seeds[-1].partition("=")[2]
            describe(job, info)


def run_info(results: dict) -> dict | None:
    """What the job ran, from its results.json header (every job that reached training has one)."""
    if "method" not in results:
        return None
    config = results.get("config") or {}

    def get(key):
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    return {"experiment": results.get("experiment"), "model": results.get("model"), "method": results.get("method"),
            "task": results.get("task"), "layer": results.get("layer"), "seed": results.get("seed"),
            "eval_tasks": results.get("eval_tasks") or [], "count_only": bool(results.get("count_only")),
            "source_task": (results.get("source") or {}).get("task") or _name(config.get("source_task")),
            "budget": budget_text(get)}


def budget_text(get) -> str | None:
    """The training budget of a job's config ("5 epochs, 64 train samples", "300 steps"); None if unknown."""
    steps, epochs, samples = get("trainer.max_steps"), get("trainer.max_epochs"), get("task.max_train_samples")
    if isinstance(steps, int) and steps > 0:
        text = f"{steps} steps"
    elif isinstance(epochs, int):
        text = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    else:
        return None
    return text + (f", {samples} train samples" if isinstance(samples, int) else "")


def saved_config_info(job_dir: Path) -> dict | None:
    """From the job's .hydra/config.yaml (written before the job's code runs)."""
    file = job_dir / ".hydra" / "config.yaml"
    if not file.is_file():
        return None
    from omegaconf import OmegaConf

    try:  # the keys read here use no custom resolver
        return config_info(OmegaConf.load(file))
    except Exception:  # an unreadable config: fall back to the overrides
        return None


def config_info(cfg) -> dict:
    from omegaconf import OmegaConf

    def get(key):
        try:
            return OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception:
            return None

    layer = get("method.layer")
    return {"experiment": get("experiment_name"), "model": get("model.name"), "method": get("method.name"),
            "task": get("task.name"), "layer": get("layer") if layer is None else layer, "seed": get("seed"),
            "eval_tasks": list(get("eval_tasks") or []), "count_only": bool(get("count_only")),
            "source_task": get("source_task.name"), "budget": budget_text(get)}


def _name(node) -> str | None:
    return node.get("name") if isinstance(node, dict) else None


def describe(job: Job, run: dict) -> None:
    """Fill in what the job ran and which table columns it reports."""
    job.experiment, job.model, job.method = run["experiment"], run["model"], run["method"]
    job.layer, job.seed, task = run["layer"], run["seed"], run["task"]
    job.budget = run.get("budget")
    if run["count_only"]:
        job.metrics["parameters"] = "trainable parameters (no head)"
        return
    if run["source_task"]:
        job.metrics[f"{run['source_task']}->{task} few-shot"] = table_metric(task)
        return
    job.metrics[task] = table_metric(task)
    for target in run["eval_tasks"]:
        job.metrics[f"{task}->{target}"] = f"{target}/acc_f1"


def table_metric(task: str) -> str:
    """The metric the paper's table reports for a task (results.json names it `table_metric`)."""
    from ..tasks import SPECS

    spec = SPECS.get(task)
    return f"{spec.eval_splits[0]}/{spec.metric}" if spec else ""


def score(job: Job, results: dict) -> None:
    """The job's scores: the table metric of its best epoch (percent); zero-shot pairs at that epoch."""
    best = results.get("best") or {}
    if results.get("count_only"):
        job.values["parameters"] = float(results["parameters"]["method"])
        return
    for column, metric in job.metrics.items():
        if "->" not in column or column.endswith("few-shot"):
            job.metrics[column] = results.get("table_metric") or results.get("monitor") or metric
            # the table metric at the best epoch (the monitor may be a held-out split carved from training)
            value = (best.get("metrics") or {}).get(job.metrics[column], best.get("value"))
            scale = 1.0 if job.metrics[column].endswith("mse") else 100.0
        else:
            value, scale = (best.get("metrics") or {}).get(metric), 100.0
        if isinstance(value, (int, float)):
            job.values[column] = float(value) * scale


# ---------------------------------------------------------------- grouping

@dataclass
class Cell:
    values: list[float]
    expected: int
    metric: str
    paper: float | None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


RowKey = tuple  # (method, layer)
PAPER_MODELS = {model for model, _, _ in PAPER}


def group_jobs(jobs: list[Job], reference: str | None = None) -> dict[tuple, dict[RowKey, dict[str, Cell]]]:
    """{(experiment, model): {(method, layer): {column: Cell}}}; every job with a known group counts as expected.
    `reference`: the paper's model whose numbers stand beside ours for models the paper did not run."""
    tables: dict = defaultdict(lambda: defaultdict(dict))
    for job in jobs:
        paper_model = job.model if job.model in PAPER_MODELS else reference
        for column, metric in job.metrics.items():
            cells = tables[(job.experiment, job.model)][(job.method, job.layer)]
            cell = cells.get(column) or Cell([], 0, metric, PAPER.get((paper_model, job.method, column)))
            cell.expected += 1
            if column in job.values:
                cell.values.append(job.values[column])
                cell.metric = job.metrics[column]
            cells[column] = cell
    return tables


def _order(values, order) -> list:
    return sorted(values, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def _row_order(key):
    method, layer = key
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), str(method),
            -1 if layer is None else layer)


# ---------------------------------------------------------------- writing

def fmt(cell: Cell | None, count: bool) -> str:
    if cell is None:
        return ""
    if cell.metric == "mean":
        return f"{cell.mean:.1f}" + (f" · paper {cell.paper:.1f}" if cell.paper is not None else "")
    if count:
        ours = f"{cell.mean:,.0f}" if cell.values else "-"
        return ours + (f" · paper {cell.paper:,.0f}" if cell.paper is not None else "")
    ours = "-" if not cell.values else f"{cell.mean:.1f}" + (f" ± {cell.std:.1f}" if cell.std is not None else "")
    ours += f" ({len(cell.values)}/{cell.expected})"
    return ours + (f" · paper {cell.paper:g}" if cell.paper is not None else "")


def mean_cell(cells: dict[str, Cell], columns: list[str]) -> Cell | None:
    """The mean over the task columns (GLUE/SuperGLUE tables), only where every column has a score."""
    tasks = [c for c in columns if c in GLUE_TASKS or c in SUPERGLUE_TASKS]
    if len(tasks) < 2 or len(tasks) != len(columns) or any(not cells.get(c) or not cells[c].values for c in tasks):
        return None
    papers = [cells[c].paper for c in tasks]
    paper = statistics.fmean(papers) if all(p is not None for p in papers) else None
    return Cell([statistics.fmean(cells[c].mean for c in tasks)], 1, "mean", paper)


def ranking(rows: dict[RowKey, dict[str, Cell]], columns: list[str]) -> str | None:
    """Methods ranked by their mean over the columns where every method has our score and the paper's."""
    methods = [m for m, _ in rows]
    usable = [c for c in columns if all(cells.get(c) and cells[c].values and cells[c].paper is not None
                                        for cells in rows.values())]
    if len(rows) < 2 or len(set(methods)) != len(methods) or not usable:
        return None

    def ranked(value) -> str:
        scores = {m: statistics.fmean(value(rows[(m, layer)][c]) for c in usable) for m, layer in rows}
        return " > ".join(f"{m} {v:.1f}" for m, v in sorted(scores.items(), key=lambda kv: -kv[1]))

    return (f"Ranking by the mean over {', '.join(usable)}: ours {ranked(lambda c: c.mean)}; "
            f"paper {ranked(lambda c: c.paper)}")


def markdown(tables, jobs: list[Job], sweeps: list[Path], figures: list[Path], reference: str | None = None) -> str:
    lines = ["# Results", "", "Sweeps: " + ", ".join(f"`{s}`" for s in sweeps), "",
             "Each cell: our mean ± std over seeds (percent; the best epoch's dev metric), "
             "(finished/expected jobs), and the paper's number (PAPER.md) where it has one.", ""]
    for (experiment, model), rows in sorted(tables.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        columns = _order({c for cells in rows.values() for c in cells}, COLUMN_ORDER)
        count = columns == ["parameters"]
        with_mean = any(mean_cell(cells, columns) for cells in rows.values())
        title = f"## {experiment or 'runs'}: {model}"
        if model not in PAPER_MODELS and reference:
            title += f" (the paper's numbers beside ours are {reference}'s)"
        lines += [title, ""]
        metrics = sorted({f"{c}: {cell.metric}" for cells in rows.values() for c, cell in cells.items() if cell.metric})
        if metrics and not count:
            lines += ["Metrics: " + "; ".join(metrics), ""]
        header = ["method", "layer", *columns] + (["mean"] if with_mean else [])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key in sorted(rows, key=_row_order):
            method, layer = key
            cells = rows[key]
            row = [str(method), "-" if layer is None or method in NO_PROMPT else str(layer)]
            row += [fmt(cells.get(c), count) for c in columns]
            if with_mean:
                row.append(fmt(mean_cell(cells, columns), False))  # the mean of the task means
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        order = None if count else ranking(rows, columns)
        if order:
            lines += [order, ""]
    for figure in figures:
        lines += [f"![metric against the injection layer]({figure.name})", ""]
    unfinished = [j for j in jobs if j.status != "finished"]
    finished = len(jobs) - len(unfinished)
    lines += ["## Jobs", "", f"{finished} of {len(jobs)} jobs finished."]
    if unfinished:
        lines += ["", "Not finished (not in the means above; an interrupted job resumes when its sweep is run again):",
                  "", "| job | overrides | status | error | got to |", "|---|---|---|---|---|"]
        for j in unfinished:
            error = (j.error or "").replace("|", "/").splitlines()[0][:200] if j.error else ""
            lines.append(f"| {j.where} | {' '.join(j.overrides)} | {j.status} | {error} | {j.how_far or ''} |")
    return "\n".join(lines) + "\n"


def csv_text(tables) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["experiment", "model", "method", "layer", "column", "metric", "mean", "std", "finished",
                     "expected", "paper", "values"])
    for (experiment, model), rows in tables.items():
        for (method, layer), cells in sorted(rows.items(), key=lambda kv: _row_order(kv[0])):
            for column in _order(cells, COLUMN_ORDER):
                c = cells[column]
                writer.writerow([experiment or "", model, method, "" if layer is None else layer, column, c.metric,
                                 "" if c.mean is None else round(c.mean, 4), "" if c.std is None else round(c.std, 4),
                                 len(c.values), c.expected, "" if c.paper is None else c.paper,
                                 " ".join(f"{v:.4f}" for v in c.values)])
    return out.getvalue()


def json_text(tables, jobs: list[Job], reference: str | None = None) -> str:
    """The CSV's rows (numbers as numbers) and every job with its status, as one JSON document."""
    rows = []
    for row in csv.DictReader(io.StringIO(csv_text(tables))):
        for key in ("mean", "std", "paper"):
            row[key] = float(row[key]) if row[key] != "" else None
        row["layer"] = int(row["layer"]) if row["layer"] != "" else None
        row["finished"], row["expected"] = int(row["finished"]), int(row["expected"])
        row["values"] = [float(v) for v in row["values"].split()]
        rows.append(row)
    job_list = [{"where": j.where, "status": j.status, "error": j.error, "experiment": j.experiment,
                 "model": j.model, "method": j.method, "layer": j.layer, "seed": j.seed, "values": j.values}
                for j in jobs]
    return json.dumps({"reference": reference, "rows": rows, "jobs": job_list}, indent=2) + "\n"


FORMATS = {"md": "report.md", "csv": "report.csv", "json": "report.json"}  # --format value -> file


def layer_figures(tables, out: Path, num_layers: dict[str, int], budgets: dict | None = None) -> list[Path]:
    """One figure per (experiment, model) where some method ran at several layers: metric against layer. The title
    names the training budget of the jobs behind it (`budgets`: (experiment, model) -> the jobs' budget texts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = {}
    for (experiment, model), rows in tables.items():
        lines = defaultdict(list)  # (method, column) -> [(layer, cell)]
        for (method, layer), cells in rows.items():
            for column, cell in cells.items():
                if layer is not None and cell.values:
                    lines[(method, column)].append((layer, cell))
        lines = {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len(v) > 1}
        if lines:
            swept[(experiment, model)] = lines
    paths = []
    for (experiment, model), lines in swept.items():
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        styles = ["-", "--", ":", "-."]
        columns = _order({c for _, c in lines}, COLUMN_ORDER)
        methods = _order({m for m, _ in lines}, METHOD_ORDER)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        seeds = sorted({len(p[1].values) for points in lines.values() for p in points})
        metrics = sorted({p[1].metric for points in lines.values() for p in points if p[1].metric})
        for (method, column), points in sorted(lines.items()):
            xs = [p[0] for p in points]
            means = [p[1].mean for p in points]
            stds = [p[1].std or 0.0 for p in points]
            color = colors[methods.index(method) % len(colors)]
            ax.plot(xs, means, styles[columns.index(column) % len(styles)], marker="o", ms=3, color=color,
                    label=f"{method} · {column}")
            several = [len(p[1].values) > 1 for p in points]
            if any(several):  # spread only where a point has several seeds
                ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                                [m + s for m, s in zip(means, stds, strict=True)], where=several, color=color,
                                alpha=0.15, interpolate=False)
        chance = chance_level(columns, metrics)
        if chance is not None:
            ax.axhline(chance, color="black", lw=0.8, ls=":", label=f"chance ({chance:.0f}%)")
        low, high = BEST_LAYERS.get(model, BEST_LAYERS["roberta_large"])
        n = num_layers.get(model)
        if model in BEST_LAYERS:
            ax.axvspan(low - 0.5, high + 0.5, color="grey", alpha=0.15, label=f"paper: best layers {low}-{high}")
        elif n:  # the paper's range is for RoBERTa-large's 24 layers: shown at the same relative depth
            ax.axvspan(low / BEST_LAYERS_OF * n - 0.5, high / BEST_LAYERS_OF * n + 0.5, color="grey", alpha=0.15,
                       label=f"paper: best {low}-{high} of {BEST_LAYERS_OF}, scaled to {n} layers")
        ax.set_xlabel("injection layer m")
        spread = "mean ± std over seeds" if seeds[-1] > 1 else "one seed, no spread"
        ax.set_ylabel(f"dev {' / '.join(metrics) or 'metric'} (%), {spread}")
        per_point = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        budget = sorted((budgets or {}).get((experiment, model)) or [])
        budget = f"\nbudget: {' / '.join(budget)}" if budget else ""
        ax.set_title(f"{experiment or 'layer sweep'}: {', '.join(columns)} on {model}; {per_point} seed(s) per point"
                     f"{budget}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        stem = "layers" if len(swept) == 1 else f"layers_{experiment}_{model}"
        for suffix in (".png", ".svg"):
            path = out / f"{stem}{suffix}"
            tmp = path.with_name(f".{path.name}.tmp")
            fig.savefig(tmp, format=suffix[1:], dpi=150)
            tmp.replace(path)
        plt.close(fig)
        paths.append(out / f"{stem}.png")
    return paths


def chance_level(tasks: list[str], metrics: list[str]) -> float | None:
    """The accuracy (%) of guessing uniformly, when every plotted task is a classification task with the same
    number of classes and the metric is accuracy; None otherwise."""
    from ..tasks import SPECS

    if {m.rsplit("/", 1)[-1] for m in metrics} != {"accuracy"}:
        return None
    counts = {len(SPECS[t].label_names or ()) if t in SPECS else 0 for t in tasks}
    k = next(iter(counts)) if len(counts) == 1 else 0
    return 100.0 / k if k > 1 else None


def model_layers(jobs: list[Job]) -> dict[str, int]:
    """Layers per model, from the model configs (for the figure's scaled best-layer range)."""
    from ..runner.compose import conf_dir

    layers = {}
    for model in {j.model for j in jobs if j.model}:
        file = conf_dir() / "model" / f"{model}.yaml"
        if file.is_file():
            n = (yaml.safe_load(file.read_text()) or {}).get("num_layers")
            if n:
                layers[model] = int(n)
    return layers


def log_to_wandb(tables, figures: list[Path], csv_body: str, sweeps: list[Path], project: str,
                 group: str | None) -> str:
    """The report as a W&B table (and the figures as images) in the sweep's group; returns the group."""
    import wandb

    group = group or f"{sweeps[0].parent.name}-{sweeps[0].name}"
    rows = list(csv.reader(io.StringIO(csv_body)))
    run = wandb.init(project=project, group=group, job_type="report", name=f"report-{group}",
                     dir=str(sweeps[0]), reinit="finish_previous")
    try:
        run.log({"report": wandb.Table(columns=rows[0], data=rows[1:])})
        for figure in figures:
            run.log({figure.stem: wandb.Image(str(figure))})
    finally:
        run.finish()
    return group


def report(sweeps: list[Path], out: Path | None = None, wandb_log: bool = False, project: str = "idspam",
           group: str | None = None, reference: str | None = None,
           formats: tuple[str, ...] = ("md", "csv")) -> dict:
    """Write report.md, report.csv (and report.json: `formats`) and the layer figures; returns what was
    written (`markdown`, `csv`, `json`: the paths of the files written) and the job counts."""
    if wandb_log:
        require_extra("wandb", "idspam-report --wandb")
    sweeps = [Path(s) for s in sweeps]
    jobs = [job for sweep in sweeps for job in read_sweep(sweep)]
    describe_unstarted(jobs)
    out = Path(out) if out else sweeps[0]
    out.mkdir(parents=True, exist_ok=True)
    if reference is not None and reference not in PAPER_MODELS:
        raise UserError(f"reference={reference!r}: the paper reports {', '.join(sorted(PAPER_MODELS))}")
    tables = group_jobs(jobs, reference)
    no_plot = missing_extra("plot", "idspam-report's layer figures")
    if no_plot:  # the tables do not need matplotlib: they are written, the figures skipped with one line
        print(f"note: {no_plot}; the figures are skipped", file=sys.stderr)
    budgets = defaultdict(set)
    for job in jobs:
        if job.status == "finished" and job.budget:
            budgets[(job.experiment, job.model)].add(job.budget)
    figures = [] if no_plot else layer_figures(tables, out, model_layers(jobs), budgets)
    body = csv_text(tables)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UserError(f"unknown report format(s) {unknown}; valid: {', '.join(FORMATS)}")
    written = {"figures": figures, "jobs": len(jobs), "finished": sum(j.status == "finished" for j in jobs)}
    if "md" in formats:
        atomic_write_text(out / FORMATS["md"], markdown(tables, jobs, sweeps, figures, reference))
        written["markdown"] = out / FORMATS["md"]
    if "csv" in formats:
        atomic_write_text(out / FORMATS["csv"], body)
        written["csv"] = out / FORMATS["csv"]
    if "json" in formats:
        atomic_write_text(out / FORMATS["json"], json_text(tables, jobs, reference))
        written["json"] = out / FORMATS["json"]
    if wandb_log:
        written["wandb_group"] = log_to_wandb(tables, figures, body, sweeps, project, group)
    return written


def build_parser():
    from .cli import ArgumentParser

    parser = ArgumentParser(prog="idspam-report", description=__doc__.split("\n\n")[0],
                            epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("sweeps", nargs="+", metavar="DIR", help="sweep dirs (outputs/multiruns/...) or run dirs")
    parser.add_argument("--out", help="folder to write the report into (default: the first DIR)")
    parser.add_argument("--format", dest="formats", nargs="+", choices=list(FORMATS), metavar="FORMAT",
                        help=f"files to write, any of {', '.join(FORMATS)} (default: md csv)")
    parser.add_argument("--reference", help="a model of the paper whose numbers go beside ours, for a model the "
                                            f"paper did not run ({', '.join(sorted(PAPER_MODELS))})")
    parser.add_argument("--wandb", action="store_true", help="also log the report as a W&B table")
    parser.add_argument("--project", default="idspam", help="W&B project (default idspam)")
    parser.add_argument("--group", help="W&B group (default: <experiment>-<time> of the first DIR)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        written = report([Path(d) for d in args.sweeps], args.out, args.wandb, args.project, args.group,
                         args.reference, tuple(args.formats or ("md", "csv")))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{written['finished']} of {written['jobs']} jobs finished")
    for key in ("markdown", "csv", "json"):
        if key in written:
            print(f"wrote {written[key]}")
    for figure in written["figures"]:
        print(f"wrote {figure} (and .svg)")
    if "wandb_group" in written:
        print(f"logged the report to W&B group {written['wandb_group']!r}")


if __name__ == "__main__":
    main()
