"""What fits where, from measured step costs (`idspam-bench --fits a.json,b.json`).

    idspam-bench --fits experiments/results/memory_llama_3_2_1b_cpu.json --batch 8 --length 512

Reads the JSON files `idspam-bench --memory-rows` writes and, for each measured row, adds:

- the frozen weights, **computed** from the model's parameter counts (its config built on the meta device, the
  backbone the row loads: `AutoModel`) and the row's precision: 2 bytes a parameter in bf16 (4 in fp32); under
  nf4/fp4 the linear layers' weights take half a byte plus a float32 absmax per block of 64 (bitsandbytes'
  defaults, no double quantization), under int8 one byte plus a float32 scale per output row; embeddings, norms
  and biases stay in bf16;
- the step cost (activations, gradients, optimizer state), **measured** (`step_mb`, peak above the loaded
  weights) and scaled linearly in tokens (batch x length): with two or more measurements of the row at different
  token counts, the least-squares line (a fixed part and a part per token); with one, the line through zero and
  that measurement (which over-states the cost above the measured tokens and under-states it below);
- for each device size (GiB), the largest batch at `--length` whose weights + step cost fit.

The measured step costs are what the machine that measured them holds (CPU: peak RSS; CUDA: peak allocated);
on a GPU add the CUDA context (a few hundred MB) and the allocator's slack.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import UserError

DEVICES_GIB = (24, 40, 80)
_SIZE = {"fp32": 4, "bf16": 2}


def weight_mb(config, precision: str) -> float:
    """MiB of the frozen backbone (`AutoModel` of `config`) in `precision`, computed from its parameters."""
    import torch
    from torch import nn
    from transformers import AutoModel

    with torch.device("meta"):
        base = AutoModel.from_config(config)
    dense = _SIZE.get(precision, 2)
    total = 0.0
    linear_weights = set()
    for module in base.modules():
        if isinstance(module, nn.Linear):
            linear_weights.add(id(module.weight))
            out_features, in_features = module.weight.shape
            n = out_features * in_features
            if precision in ("nf4", "fp4"):
                total += n / 2 + 4 * n / 64
            elif precision == "int8":
                total += n + 4 * out_features
            else:
                total += n * dense
    seen = set()
    for p in base.parameters():  # everything else (embeddings, norms, biases): bf16, or fp32 in fp32 rows
        if id(p) not in linear_weights and id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * dense
    return total / 2**20


def read_rows(paths: list[str]) -> list[dict]:
    """The measured rows of `--memory-rows` JSON files, each with its model, batch and length."""
    rows = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--fits {path}: cannot read it as JSON ({type(e).__name__}); valid: files that "
                            "idspam-bench --memory-rows writes") from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "model" not in data.get("args", {}):
            raise UserError(f"--fits {path}: not an idspam-bench --memory-rows file (no args.model and rows)")
        args = data["args"]
        for r in data["rows"]:
            rows.append({"model": args["model"], "batch": args["batch"], "length": args["length"],
                         "device": args.get("device", "cpu"), "source": str(path), **r})
    if not rows:
        raise UserError(f"--fits {','.join(paths)}: no rows in these files")
    return rows


def cost_lines(rows: list[dict]) -> dict:
    """(model, row) -> {"fixed_mb", "per_token_mb", "tokens": [...], "how"}: the step cost as a line in tokens."""
    points: dict = {}
    for r in rows:
        if "error" in r:
            continue
        points.setdefault((r["model"], r["row"]), []).append((r["batch"] * r["length"], r["step_mb"], r))
    lines = {}
    for key, pts in points.items():
        tokens = sorted({t for t, _, _ in pts})
        if len(tokens) >= 2:
            n = len(pts)
            mt = sum(t for t, _, _ in pts) / n
            ms = sum(s for _, s, _ in pts) / n
            slope = sum((t - mt) * (s - ms) for t, s, _ in pts) / sum((t - mt) ** 2 for t, _, _ in pts)
            fixed, how = ms - slope * mt, f"line through {n} measurements"
        else:
            t, s = pts[0][0], max(p[1] for p in pts)
            slope, fixed, how = s / t, 0.0, f"linear through zero from {t} tokens"
        lines[key] = {"fixed_mb": fixed, "per_token_mb": slope, "tokens": tokens, "how": how, "row": pts[0][2]}
    return lines


def fits(rows: list[dict], batch: int, length: int, devices=DEVICES_GIB, weights=None) -> list[dict]:
    """Per measured (model, row): computed weights, the step cost at batch x length and the largest batch at
    `length` that fits on each device. `weights(model, precision) -> MiB` (default: `weight_mb` of the model
    config's shapes)."""
    from .common import model_config

    if weights is None:
        weights = lambda model, precision: weight_mb(model_config(model)[1], precision)  # noqa: E731
    out, memo = [], {}
    for (model, name), line in cost_lines(rows).items():
        r = line["row"]
        key = (model, r["precision"])
        if key not in memo:
            memo[key] = weights(model, r["precision"])
        w = memo[key]
        step = line["fixed_mb"] + line["per_token_mb"] * batch * length
        largest = {}
        for gib in devices:
            room = gib * 1024 - w - line["fixed_mb"]
            largest[gib] = max(0, int(room // (line["per_token_mb"] * length))) if line["per_token_mb"] > 0 else None
        out.append({"model": model, "row": name, "precision": r["precision"], "weights_mb": round(w, 1),
                    "step_mb": round(step, 1), "total_mb": round(w + step, 1), "batch": batch, "length": length,
                    "largest_batch": largest, "scaling": line["how"], "measured_tokens": line["tokens"],
                    "measured_on": r["device"], "source": r["source"]})
    return out


def fits_table(results: list[dict], rows: list[dict], devices=DEVICES_GIB) -> str:
    batch, length = (results[0]["batch"], results[0]["length"]) if results else (0, 0)
    head = " | ".join(f"largest batch x {length}, {g} GiB" for g in devices)
    lines = [f"weights: computed from parameter counts; step: measured peak above the weights, scaled linearly "
             f"to batch {batch} x length {length}", "",
             f"| model | row | weights GiB (computed) | step GiB at {batch} x {length} | total GiB | {head} | "
             "step measured at (tokens; scaling) |",
             "|---|---|---|---|---|" + "---|" * len(devices) + "---|"]
    for f in results:
        cells = " | ".join("n/a" if f["largest_batch"][g] is None else
                           ("does not fit" if f["largest_batch"][g] == 0 else str(f["largest_batch"][g]))
                           for g in devices)
        lines.append(f"| {f['model']} | {f['row']} | {f['weights_mb'] / 1024:.2f} | {f['step_mb'] / 1024:.2f} | "
                     f"{f['total_mb'] / 1024:.2f} | {cells} | {', '.join(map(str, f['measured_tokens']))} on "
                     f"{f['measured_on']}; {f['scaling']} |")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['row']} | did not run at {r['batch']} x {r['length']}: "
                         f"{r['error']} |" + " |" * (3 + len(devices)))
    return "\n".join(lines)
