"""trainer=fsdp on this CPU (issue 23, item 3): two gloo processes (FSDP2 over the frozen layers, the trained parts
replicated) against one process on the same global batch; trained-only checkpoints; kill -9 then resume.

The runs start together (a module fixture) and are reused by every assertion: one process at batch 8, two
processes at batch 4 each, and a two-process run killed (SIGKILL to its whole process group) in step 4 with
checkpoint_every_n_steps=2, then resumed with resume=auto.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# 32 examples, 2 epochs: 4 steps of 8 examples per epoch (one process) = 4 steps of 2 x 4 (two processes)
COMMON = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=32", "task.max_eval_samples=32",
          "logger=none", "method.dropout=0", "head.dropout=0", "optimizer.lr=1e-2", "optimizer.warmup_ratio=0"]
FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "data.batch_size=4"]
TIMEOUT = 150


def start(folder: Path, *args: str, module: str = "idspam.run") -> subprocess.Popen:
    """A run in its own session (its whole process group can be killed), output to <folder>.log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(f"{folder}.log", "a")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", module, *args, f"hydra.run.dir={folder}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log, proc.folder = log, folder
    return proc


def wait(proc: subprocess.Popen) -> int:
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # a hung rank must not outlive the test
        proc.wait()
        rc = "timeout"
    finally:
        proc.log.close()
    if rc not in (0, -signal.SIGKILL):
        pytest.fail(f"{proc.args[3:6]}... exited {rc}:\n{Path(f'{proc.folder}.log').read_text()[-3000:]}")
    return rc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fsdp")
    one = start(base / "one", *COMMON, "trainer=cpu", "data.batch_size=8")
    two = start(base / "two", *COMMON, *FSDP)
    killed = start(base / "killed", "step", "KILLGROUP", "3", *COMMON, *FSDP, "checkpoint_every_n_steps=2",
                   module="tests.signal_at")
    assert wait(killed) == -signal.SIGKILL  # it dies in step 4 of 8: resumed while the others still run
    out = {"one": base / "one", "two": base / "two", "killed": base / "killed"}
    out["killed_step"] = torch.load(base / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    out["killed_status"] = json.loads((base / "killed" / "results.json").read_text())["status"]
    resumed = start(base / "killed", *COMMON, *FSDP, "checkpoint_every_n_steps=2", "resume=auto")
    assert wait(one) == 0 and wait(two) == 0 and wait(resumed) == 0
    return out


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def ckpt(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)


def epochs(folder: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if "/" in k or k in ("epoch", "step", "train_loss", "train_examples")}
            for e in results(folder)["epochs"]]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_fsdp_processes_match_one_process_on_the_same_global_batch(runs):
    one, two = runs["one"], runs["two"]
    assert "FSDP: 3 of 4 layers sharded over 2 processes" in Path(f"{two}.log").read_text()  # pruned: last whole
    a, b = epochs(one), epochs(two)
    assert [(e["epoch"], e["step"], e["train_examples"]) for e in b] == [(0, 4, 32), (1, 8, 32)]
    assert [(e["epoch"], e["step"], e["train_examples"]) for e in a] == [(0, 4, 32), (1, 8, 32)]
    loss = max(abs(x["train_loss"] - y["train_loss"]) for x, y in zip(a, b, strict=True))
    metrics = max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in x if "/" in k)
    sa, sb = ckpt(one)["state_dict"], ckpt(two)["state_dict"]
    assert sa.keys() == sb.keys()
    params = max_diff(sa, sb)
    print(f"\n1 vs 2 processes, max abs difference: train loss {loss:.2e}, metrics {metrics:.2e}, "
          f"trained parameters after 8 steps {params:.2e}")
    assert loss < 1e-6 and metrics < 1e-6 and params < 1e-6
    assert abs(a[0]["train_loss"] - a[1]["train_loss"]) > 1e-2  # it trained
    pa = json.loads((one / "predictions" / "epoch1.json").read_text())
    pb = json.loads((two / "predictions" / "epoch1.json").read_text())  # rank 0 validated on the whole set
    assert pa == pb and len(pa["validation"]["pred"]) == 32


def test_fsdp_checkpoints_and_adapter_hold_only_the_trained_tensors(runs):
    from idspam.adapter import read_adapter

    two = runs["two"]
    state = ckpt(two)
    trained = results(two)["parameters"]["trainable"]
    assert sum(t.numel() for t in state["state_dict"].values()) == trained  # 48,642 of ~1.08 M
    assert not any(k.startswith("model.engine.") for k in state["state_dict"])  # idspam: nothing in the backbone
    assert all(type(t) is torch.Tensor for t in state["state_dict"].values())  # plain tensors, no DTensor shards
    assert len(state["optimizer_states"][0]["state"]) == len(state["state_dict"])  # AdamW state of those alone
    best = torch.load(two / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert best.keys() == state["state_dict"].keys()
    _, weights = read_adapter(two / "adapter")
    assert {f"model.{k}" for k in weights} == set(state["state_dict"])


def test_fsdp_kill_minus_9_then_resume_gives_the_uninterrupted_result(runs):
    killed, two = runs["killed"], runs["two"]
    assert runs["killed_step"] == 2 and runs["killed_status"] == "running"  # died mid-epoch, after step 2's save
    resumed = results(killed)
    assert resumed["attempt"] == "resume" and resumed["status"] == "finished"
    assert epochs(killed) == epochs(two)
    a, b = ckpt(killed)["state_dict"], ckpt(two)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_config_defaults_to_gpus_and_names_the_strategy(compose_cfg):
    """The GPU path is the default; the CPU runs above build the same config with accelerator=cpu devices=2."""
    cfg = compose_cfg("model=tiny", "trainer=fsdp")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.strategy._target_ == "idspam.runner.fsdp.FrozenFSDPStrategy"
    assert cfg.trainer.use_distributed_sampler is False


@pytest.mark.parametrize("override, says", [
    ("cache_lower=true", "cache_lower=true is not supported with trainer=fsdp"),
    ("model.quantization=nf4", "trainer=fsdp with model.quantization=nf4"),
    ("method=finetune", "method=finetune trains the backbone's own weights: use trainer=ddp"),
    ("data.group_by_length=true", "data.group_by_length=true is not supported"),
])
def test_fsdp_refuses_what_it_cannot_take_in_one_line_before_weights(compose_cfg, override, says):
    from idspam.errors import UserError
    from idspam.runner.checks import validate

    if override.startswith("model.quantization"):
        pytest.importorskip("bitsandbytes")
    with pytest.raises(UserError, match=says) as e:
        validate(compose_cfg("model=tiny", "trainer=fsdp", override))
    assert "\n" not in str(e.value)


def test_cache_lower_auto_is_off_under_fsdp(compose_cfg):
    from idspam.runner.checks import validate

    assert validate(compose_cfg("model=tiny", "cache_lower=auto")).cache_lower is True
    assert validate(compose_cfg("model=tiny", "trainer=fsdp", "cache_lower=auto")).cache_lower is False
