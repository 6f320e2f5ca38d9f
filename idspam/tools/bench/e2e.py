"""End-to-end benchmark of `cache_lower`: real training runs (the runner's own `train`), cache writing
included, on a real data subsample; the step benchmark (`idspam.bench`) times steps on one batch.

    idspam-bench --e2e --data-dir ../shared/data/glue_data     # MiniLM, SST-2, 2,000 examples, 5 epochs

Rows, timed interleaved (each repeat runs every row once, so drifts of a shared machine hit every row
alike), wall time of the whole `train` call (model load, every epoch, validation after each epoch;
the tokenised data is cached before the first timed run; with the cache, the evaluation splits' lower
stack runs once too): ID-SPAM at m = N/2 and m = N-2, without
the cache and with the cache in memory, and at m = N/2 on disk too (`cache_lower_memory_gb=0`:
written, flushed and published like a cache too big for memory); and, once each, the disk cache
stored in bfloat16 and float16, for their effect on the final metric. The cache's bytes per real training token are
read from the disk cache's files.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

E2E_DEFAULTS = {"e2e_model": "minilm", "e2e_task": "sst2", "e2e_samples": 2000, "e2e_epochs": 5, "e2e_repeats": 5,
                "data_dir": None, "e2e_rows": ""}


def add_e2e_options(parser) -> None:
    from ..cli import positive_int

    group = parser.add_argument_group("end to end (--e2e)")
    add = group.add_argument
    add("--e2e", action="store_true", default=None,
        help="time whole training runs with and without cache_lower instead of single steps")
    add("--e2e-model", help=f"model config, pretrained (default {E2E_DEFAULTS['e2e_model']})")
    add("--e2e-task", help=f"task config (default {E2E_DEFAULTS['e2e_task']})")
    add("--e2e-samples", type=positive_int, help=f"training examples (default {E2E_DEFAULTS['e2e_samples']})")
    add("--e2e-epochs", type=positive_int, help=f"epochs per run (default {E2E_DEFAULTS['e2e_epochs']})")
    add("--e2e-repeats", type=positive_int, help=f"timed repeats of every row (default {E2E_DEFAULTS['e2e_repeats']})")
    add("--e2e-rows", help="comma-separated row names (default: every row)")
    add("--data-dir", help="local data (the runner's data_dir), e.g. ../shared/data/glue_data")


def rows_for(num_layers: int) -> list[tuple[str, dict, bool]]:
    """(name, overrides, timed); timed rows run every repeat, the others once (their metric)."""
    mid, late = num_layers // 2, num_layers - 2
    rows = []
    disk = {"cache_lower": True, "cache_lower_memory_gb": 0}
    rows += [(f"m={mid} uncached", {"layer": mid}, True),
             (f"m={mid} cache_lower memory", {"layer": mid, "cache_lower": True}, True),
             (f"m={mid} cache_lower disk", {"layer": mid, **disk}, True)]
    if late != mid:
        rows += [(f"m={late} uncached", {"layer": late}, True),
                 (f"m={late} cache_lower memory", {"layer": late, "cache_lower": True}, True)]
    rows += [(f"m={mid} cache_lower disk {d}", {"layer": mid, **disk, "cache_lower_dtype": d}, False)
             for d in ("bfloat16", "float16")]
    return rows


def compose(args: dict, overrides: dict, work: Path, out: str):
    from ...runner.compose import compose as compose_config

    items = [f"model={args['e2e_model']}", f"task={args['e2e_task']}", "method=idspam",
             f"task.max_train_samples={args['e2e_samples']}", f"trainer.max_epochs={args['e2e_epochs']}",
             "logger=none", "trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
             f"seed={args['seed']}", f"cache_dir={work / 'cache'}", f"paths.output_dir={work / out}"]
    if args.get("data_dir"):
        items.append(f"data_dir={Path(args['data_dir']).expanduser().resolve()}")
    items += [f"{k}={v}" for k, v in overrides.items()]
    return compose_config(items)


def one_run(args: dict, name: str, overrides: dict, work: Path, k: int) -> dict:
    """Train once from a cold lower cache; wall time, final and best metric, cache bytes per token."""
    from ...runner.train import train

    shutil.rmtree(work / "cache" / "lower", ignore_errors=True)  # the first epoch writes the cache again
    out = f"{name.replace(' ', '_').replace('=', '')}-{k}"
    cfg = compose(args, overrides, work, out)
    start = time.perf_counter()
    results = train(cfg)
    wall = time.perf_counter() - start
    monitor = results["monitor"] if "monitor" in results else results.get("table_metric")
    final = results["epochs"][-1].get(monitor) if results.get("epochs") else None
    row = {"row": name, "wall_s": wall, "final": final, "best": (results.get("best") or {}).get("value"),
           "metric": monitor}
    lower = work / "cache" / "lower"
    folders = [f for f in lower.iterdir() if (f / "meta.json").is_file()] if lower.is_dir() else []
    folders = [f for f in folders if json.loads((f / "meta.json").read_text())["key"].get("split") == "train"]
    if folders:  # the training split's cache (the evaluation splits' are small and have their own)
        meta = json.loads((folders[0] / "meta.json").read_text())
        files = sum(p.stat().st_size for p in folders[0].iterdir() if p.suffix in (".bin", ".npy", ".log"))
        row.update(cache_bytes=files, cache_tokens=meta["tokens"], cache_bytes_per_token=files / meta["tokens"],
                   cache_dtype=meta["dtype"], hidden_size=meta["hidden_size"])
    shutil.rmtree(work / out, ignore_errors=True)
    return row


def run_e2e(args: dict) -> dict:
    from ...backbone import load_config
    from .common import model_config

    args = {**E2E_DEFAULTS, **{k: v for k, v in args.items() if v is not None}}
    num_layers = load_config(model_config(args["e2e_model"])[0]).num_hidden_layers
    specs = rows_for(num_layers)
    if args["e2e_rows"]:
        wanted = set(args["e2e_rows"].split(","))
        specs = [s for s in specs if s[0] in wanted]
    work = Path(tempfile.mkdtemp(prefix="idspam-e2e-"))
    try:
        # untimed: tokenise the splits into the cache, load the model files once
        one_run({**args, "e2e_epochs": 1}, "warm-up", {"layer": specs[0][1]["layer"],
                                                       "task.max_eval_samples": 8}, work, 0)
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in specs}
        for k in range(int(args["e2e_repeats"])):
            for name, overrides, timed in specs:
                if timed or k == 0:
                    runs[name].append(one_run(args, name, overrides, work, k))
                    last = runs[name][-1]
                    print(f"repeat {k}: {name}: {last['wall_s']:.1f} s, final {last['final']}, best {last['best']}"
                          + (f", cache {last['cache_bytes_per_token']:.1f} bytes per token ({last['cache_dtype']})"
                             if "cache_bytes_per_token" in last else ""), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, overrides, _ in specs:
        walls = [r["wall_s"] for r in runs[name]]
        first = runs[name][0]
        uncached = f"m={overrides['layer']} uncached"
        rows.append({**{k: v for k, v in first.items() if k.startswith("cache") or k == "hidden_size"}, "row": name,
                     "layer": overrides["layer"], "repeats": len(walls), "wall_s": statistics.median(walls),
                     "wall_min_s": min(walls), "wall_max_s": max(walls), "walls": walls,
                     "metric": first["metric"], "final": [r["final"] for r in runs[name]],
                     "best": [r["best"] for r in runs[name]], "vs_uncached": None, "uncached_row": uncached})
    by_name = {r["row"]: r for r in rows}
    for r in rows:
        base = by_name.get(r["uncached_row"])
        if base and r is not base:
            # ratio per repeat (the same repeat ran both rows back to back), then median / min / max
            ratios = [a / b for a, b in zip(r["walls"], base["walls"], strict=False)]
            r["vs_uncached"] = statistics.median(ratios)
            r["vs_uncached_min"], r["vs_uncached_max"] = min(ratios), max(ratios)
    return {"args": args, "rows": rows, "num_layers": num_layers}


def table_e2e(report: dict) -> str:
    a = report["args"]
    lines = [f"end to end: model={a['e2e_model']} task={a['e2e_task']} train examples={a['e2e_samples']} "
             f"epochs={a['e2e_epochs']} method=idspam; median of {a['e2e_repeats']} interleaved repeats (min-max)", "",
             "| row | wall s (min-max) | vs uncached, same m (min-max) | final metric | cache bytes / token |",
             "|---|---|---|---|---|"]
    for r in report["rows"]:
        ratio = (f"{r['vs_uncached']:.2f}x ({r['vs_uncached_min']:.2f}-{r['vs_uncached_max']:.2f})"
                 if r["vs_uncached"] is not None else "")
        finals = sorted({round(v, 4) for v in r["final"] if v is not None})
        bpt = (f"{r['cache_bytes_per_token']:.1f} ({r['cache_dtype']}, hidden {r['hidden_size']})"
               if "cache_bytes_per_token" in r else "")
        lines.append(f"| {r['row']} | {r['wall_s']:.1f} ({r['wall_min_s']:.1f}-{r['wall_max_s']:.1f}) | {ratio} | "
                     f"{r['metric']} {', '.join(f'{v:.4f}' for v in finals)} | {bpt} |")
    return "\n".join(lines)


def main_e2e(args: dict) -> None:
    from ...files import atomic_write_json, package_versions

    report = run_e2e(args)
    text = table_e2e(report)
    print(text)
    import torch

    out = Path(args.get("out") or "bench.json")
    atomic_write_json(out, {**report, "table": text, "versions": package_versions(),
                            "torch_threads": torch.get_num_threads()})
    print(f"\nwritten: {out}")
