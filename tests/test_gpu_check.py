"""The device check (`make gpu-check`, experiments/gpu_check.sh) rehearsed on the CPU: the same script, every part
and every row, shrunk through its environment to tiny models and a 16-example run, so a wrong flag, a row the
benchmark refuses or a broken run fails here and not on a lent GPU. Real-data (the MiniLM run reads the demo
task), so `slow`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_device_check_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DEVICE": "cpu", "MODEL_1B": "tiny_llama",
           "MODEL_8B": "tiny_llama", "STEP_MODEL": "tiny_llama", "BATCH": "2", "LENGTH": "16", "TRAINER": "cpu",
           "RUN_SAMPLES": "16", "LIMIT_SCALE": "5"}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    summary = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert done.returncode == 0 and [(p["part"], p["rc"]) for p in summary] == [
        ("memory_1b", 0), ("memory_8b", 0), ("step", 0), ("run", 0)], (done.stdout, done.stderr, summary)
    rows = {name: json.loads((out / f"{name}.json").read_text())["rows"] for name in ("memory_1b", "memory_8b")}
    assert [r["row"] for r in rows["memory_1b"]] == [
        "idspam m=2 bf16", "idspam m=2 nf4", "idspam m=2 nf4 ckpt", "idspam m=2 nf4 cache",
        "peft prompt_tuning bf16", "peft lora bf16", "peft prompt_tuning nf4", "peft lora nf4"]
    assert [r["row"] for r in rows["memory_8b"]] == ["idspam m=2 nf4 ckpt", "peft lora nf4"]
    for r in rows["memory_1b"] + rows["memory_8b"]:
        assert "error" not in r and r["seconds_per_step"] > 0 and r["trained_parameters"] > 0, r
    step = json.loads((out / "step.json").read_text())["rows"]
    assert step and all(r["seconds_per_step"] > 0 for r in step)
    results = json.loads((out / "run" / "results.json").read_text())
    assert results["status"] == "finished" and len(results["epochs"]) == 2, results
    assert (out / "run" / "adapter").is_dir()
