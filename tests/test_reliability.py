"""Checkpoints, exact resume, adapters, predict, and failures that stay one clear line."""

import json
import os
import signal
import time

import pytest
import torch

from idspam.errors import UserError

from .test_run import FAST, run_cli
from .zygote import start_module

RESUME = ["model=tiny", "trainer.max_epochs=4", "task.max_train_samples=400", "task.max_eval_samples=64",
          "logger=none"]


def per_epoch(results):
    return [{k: v for k, v in e.items() if "/" in k or k in ("epoch", "step", "train_loss")} for e in results["epochs"]]


def test_resume_after_sigkill_is_exact(tmp_path):
    """Killed (SIGKILL) during its second epoch and resumed, a run ends with an uninterrupted run's numbers."""
    run_cli(*RESUME, f"hydra.run.dir={tmp_path / 'whole'}")
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())

    killed = tmp_path / "killed"
    proc = start_module("idspam.run", *RESUME, f"hydra.run.dir={killed}")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait for the first epoch's checkpoint
        try:
            if (killed / "checkpoints" / "last.ckpt").is_file():
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = json.loads((killed / "results.json").read_text())
    assert partial["status"] == "running" and len(partial["epochs"]) < 4

    run_cli(*RESUME, f"resume={killed}")  # from the end of epoch 0
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["status"] == "finished" and resumed["resumed"] == 1
    assert per_epoch(resumed) == per_epoch(whole)
    assert resumed["best"] == whole["best"]


def test_resume_refuses_another_configuration_and_a_missing_checkpoint(compose_cfg, tmp_path):
    from idspam.runner.train import train

    train(compose_cfg(*FAST, "trainer.max_epochs=1"))
    with pytest.raises(UserError,
                       match=r"differs from the checkpoint's in \['optimizer'\]; e.g. optimizer: checkpoint"):
        train(compose_cfg(*FAST, "trainer.max_epochs=1", "optimizer.lr=0.5", f"resume={tmp_path}"))
    with pytest.raises(UserError, match="no checkpoint at"):
        train(compose_cfg(*FAST, f"resume={tmp_path / 'nothing'}"))


def test_resume_before_the_first_checkpoint_starts_again(compose_cfg, tmp_path, caplog):
    from idspam.runner.train import train

    train(compose_cfg(*FAST, "trainer.max_epochs=1"))
    for ckpt in (tmp_path / "checkpoints").iterdir():
        ckpt.unlink()
    results = train(compose_cfg(*FAST, "trainer.max_epochs=1", f"resume={tmp_path}"))
    assert "no checkpoint yet; starting it from the beginning" in caplog.text
    assert results["status"] == "finished" and "resumed" not in results
    assert (tmp_path / "csv" / "metrics.csv").is_file() and (tmp_path / "csv" / "resumed-1" / "metrics.csv").is_file()


def test_checkpoints_hold_only_what_trains(compose_cfg, tmp_path):
    from idspam.runner.train import train

    results = train(compose_cfg(*FAST, "trainer.max_epochs=1"))
    trainable = results["parameters"]["trainable"]
    for name in ("last.ckpt", "best.ckpt"):
        path = tmp_path / "checkpoints" / name
        ckpt = torch.load(path, weights_only=True)
        tensors = ckpt["state_dict"]
        assert sum(t.numel() for t in tensors.values()) == trainable
        assert not any(k.startswith("model.engine.") for k in tensors), "a backbone tensor is in the checkpoint"
        # weights plus AdamW's two moments, 4 bytes each, and some room for the loop state
        assert path.stat().st_size < 3 * 4 * trainable + 200_000


class Payload:
    """Any class: unpickling it could run code, so weights_only loading must refuse it."""


def test_unsafe_checkpoint_is_refused(tmp_path):
    from idspam.runner.checkpoints import load_checkpoint

    torch.save({"state_dict": {}, "evil": Payload()}, tmp_path / "last.ckpt")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "last.ckpt")


def test_adapter_predictions_match_the_evaluation_in_training(compose_cfg, tmp_path, capsys):
    """A real backbone (packaged MiniLM): the adapter of the best epoch, reloaded by idspam.predict, scores the
    dev file exactly as the evaluation inside training did."""
    from importlib import resources

    from idspam.runner.train import train
    from idspam.tools.predict import main as predict_main

    results = train(compose_cfg("trainer.max_epochs=2", "logger=none"))
    adapter = tmp_path / "adapter"
    config = json.loads((adapter / "idspam_adapter.json").read_text())
    assert config["method"]["name"] == "idspam" and config["layer"] == 3 and config["peft_type"] == "IDSPAM"
    assert config["task"]["label_names"] == ["negative", "positive"] and config["model"]["hidden_size"] == 384

    dev = resources.files("idspam") / "resources" / "demo_sentiment_dev.csv"
    out = tmp_path / "predictions.jsonl"
    predict_main([str(adapter), "--input", str(dev), "--output", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == results["data"]["validation"]
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(results["best"]["metrics"]["validation/accuracy"], abs=1e-6)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert f"accuracy {accuracy:.4f} on {len(rows)} labelled inputs" in capsys.readouterr().err


def test_adapter_on_a_backbone_of_other_shapes_is_refused(compose_cfg, tmp_path, capsys):
    from idspam.runner.train import train
    from idspam.tools.predict import main as predict_main

    train(compose_cfg(*FAST, "trainer.max_epochs=1"))
    config_file = tmp_path / "adapter" / "idspam_adapter.json"
    config = json.loads(config_file.read_text())
    config["model"].update(name="minilm", name_or_path="packaged:all-MiniLM-L6-v2", pretrained=True, arch=None,
                           tokenizer=None)  # trained on tiny (hidden 32), pointed at MiniLM (hidden 384)
    config_file.write_text(json.dumps(config))
    (tmp_path / "in.csv").write_text("sentence\ngood\n")
    with pytest.raises(SystemExit) as e:
        predict_main([str(tmp_path / "adapter"), "--input", str(tmp_path / "in.csv")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "was trained on 'packaged:all-MiniLM-L6-v2' (model_type roberta, hidden_size 32, num_layers 4)" in err
    assert "this backbone is model_type bert, hidden_size 384, num_layers 6" in err


@pytest.mark.parametrize("args, message", [
    ([], "idspam-predict: error: the following arguments are required: adapter"),
    (["/nowhere", "--input", "x"], "adapter '/nowhere' does not exist"),
    (["x", "--adaptor", "y"], "idspam-predict: error: unrecognized arguments: --adaptor"),
])
def test_predict_arguments_are_checked(args, message, capsys):
    from idspam.tools.predict import main as predict_main

    with pytest.raises(SystemExit):
        predict_main(args)
    assert message in capsys.readouterr().err


def test_predict_input_without_the_text_column(compose_cfg, tmp_path, capsys):
    from idspam.runner.train import train
    from idspam.tools.predict import main as predict_main

    train(compose_cfg(*FAST, "trainer.max_epochs=1"))
    (tmp_path / "in.tsv").write_text("text\tlabel\ngood\tpositive\n")
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path / "adapter"), "--input", str(tmp_path / "in.tsv")])
    assert "in.tsv: missing column(s) ['sentence']; the header has ['text', 'label']" in capsys.readouterr().err


def test_non_finite_loss_stops_with_the_step_and_a_hint(compose_cfg, tmp_path):
    from idspam.runner.train import train

    with pytest.raises(UserError, match=r"the training loss became (nan|inf) at step \d+ .*try a lower learning rate"):
        train(compose_cfg(*FAST, "optimizer.lr=1e30", "optimizer.warmup_ratio=0", "method.dropout=0"))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "failed" and "training loss became" in results["error"]


def test_unreadable_data_file_is_one_line(tmp_path):
    from idspam import tasks
    from idspam.config import TaskConfig

    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match=r"cannot read data file '.*dev.tsv': 'utf-8' codec can't decode"):
        tasks.load_split(tasks.SPECS["rte"], TaskConfig(name="rte"), "validation", str(tmp_path), 0)


def test_multirun_summary_lists_the_failed_job(tmp_path):
    """One job fails inside training (not a config error); the other still runs; the summary lists both."""
    proc = run_cli("-m", *FAST, "trainer.max_epochs=1", "optimizer.warmup_ratio=0", "method.dropout=0",
                   "optimizer.lr=1e30,1e-3", f"hydra.sweep.dir={tmp_path}", expect=1)  # a failed job: exit 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["jobs"] == 2 and summary["failed"] == 1
    failed, finished = summary["rows"]
    assert failed["status"] == "failed" and "training loss became" in failed["error"]
    assert finished["status"] == "finished" and finished["best"] is not None
    assert "optimizer.lr=1e+30 | failed |" in (tmp_path / "summary.md").read_text()
    assert "sweep summary: 1 of 2 jobs finished" in proc.stdout
