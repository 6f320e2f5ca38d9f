"""What the benchmark's modes share: the models they build, the device sync, peak memory, the output file."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...backbone import DTYPES

PRECISIONS = {"fp32": DTYPES["float32"], "bf16": DTYPES["bfloat16"]}  # --precision: the one dtype table


@dataclass
class Row:
    name: str
    step: object  # () -> None: one timed step
    times: list[float] = field(default_factory=list)


def model_config(name: str):
    """(ModelConfig, backbone config) of a model config by name, with random weights (no download)."""
    from ...backbone import load_config
    from ...config import ModelConfig, typed
    from ...runner.compose import compose

    cfg = compose([f"model={name}", "model.pretrained=false"])
    model = typed(cfg.model, ModelConfig, "model")
    return model, load_config(model)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_mb(row: Row, args: dict, steps: int = 2) -> float:
    """Peak memory growth (MB) above what is allocated before the row's training steps."""
    if args["device"].startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            row.step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for _ in range(steps):
        row.step()
    done.set()
    thread.join()
    return (peak[0] - before) / 2**20


def finish(args: dict, results: list[dict], text: str, command: list[str] | None = None) -> None:
    """Print the table and write the results, with the command line that made them, atomically."""
    import shlex

    print(text)
    out = Path(args["out"])
    from ...files import atomic_write_json, package_versions

    atomic_write_json(out, {"args": args, "rows": results, "table": text, "versions": package_versions(),
                            "torch_threads": torch.get_num_threads(),
                            **({} if command is None else {"command": shlex.join(["idspam-bench", *command])})})
    print(f"\nwritten: {out}", file=sys.stderr)


def to_argv(args: dict) -> list[str]:
    """The command-line options that `parse` turns back into `args`."""
    argv = []
    for key, value in args.items():
        if key == "quick":
            argv += ["--quick"] if value else []
        elif key != "memory_row":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv
