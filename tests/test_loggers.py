"""The experiment loggers get the run's hyperparameters: W&B's config and summary (read back from the offline
run folder), the CSV logger's hparams.yaml."""

import json
from pathlib import Path

import pytest

FAST = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=32", "task.max_eval_samples=16",
        "method.prompt_length=2", "method.bottleneck=8"]


def log_records(path: Path):
    """The records of a W&B transaction log (.wandb): LevelDB's log format, a 7-byte header then 32 KiB blocks
    of chunks (4-byte checksum, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def offline_records(run_folder: Path) -> tuple[dict, dict]:
    """(config, summary) as written into an offline W&B run's transaction log."""
    from wandb.proto import wandb_internal_pb2

    config, summary = {}, {}
    for data in log_records(next(run_folder.glob("*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind in ("config", "run"):
            items = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key: json.loads(item.value_json) for item in items})
        if kind in ("summary", "run"):
            items = record.summary.update if kind == "summary" else record.run.summary.update
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return config, summary


def test_wandb_run_has_the_config_best_epoch_and_counts(compose_cfg, monkeypatch):
    from idspam.runner.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(*FAST, "logger=wandb", "optimizer.weight_decay=0.03")
    results = train(cfg)
    (run_folder,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    config, summary = offline_records(run_folder)
    assert config["method.name"] == "idspam" and config["model.name"] == "tiny" and config["layer"] == 2
    assert config["optimizer.weight_decay"] == pytest.approx(0.03) and config["seed"] == results["seed"]
    assert config["parameters.trainable"] == results["parameters"]["trainable"] > 0
    assert config["git_commit"] == results["git_commit"]
    best = results["best"]
    assert summary["best/epoch"] == best["epoch"]
    assert summary["best/validation/accuracy"] == pytest.approx(best["metrics"]["validation/accuracy"])
    assert summary["parameters/trainable"] == results["parameters"]["trainable"]


def test_csv_logger_writes_hparams_yaml(compose_cfg):
    import yaml

    from idspam.runner.train import train

    cfg = compose_cfg(*FAST, "trainer.max_epochs=1", "logger=csv")
    results = train(cfg)
    hparams = yaml.safe_load((Path(cfg.paths.output_dir) / "csv" / "hparams.yaml").read_text())
    assert hparams["method.name"] == "idspam" and hparams["layer"] == 2
    assert hparams["parameters.trainable"] == results["parameters"]["trainable"]
