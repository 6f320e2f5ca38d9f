"""End to end: `python -m idspam.run` and a Hydra multirun each write results.json."""

import json
import os
from pathlib import Path

import pytest

from .conftest import GLUE_DIR, needs_glue
from .zygote import run_module

FAST = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=64", "task.max_eval_samples=32",
        "logger=csv"]


def run_cli(*args, env=None, timeout=300, expect=0):
    proc = run_module("idspam.run", *args, env={**os.environ, **(env or {})}, timeout=timeout)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def test_single_run_writes_results(tmp_path):
    proc = run_cli(*FAST, f"hydra.run.dir={tmp_path}")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "finished"
    assert [e["epoch"] for e in results["epochs"]] == [0, 1]
    assert results["monitor"] == "validation/accuracy"
    assert results["best"]["value"] == max(e["validation/accuracy"] for e in results["epochs"])
    assert results["data"] == {"train": 64, "validation": 32}
    params = results["parameters"]
    assert params["trainable"] == params["method"] + params["head"] and params["head_counted_in_trainable"]
    assert params["total"] > params["trainable"] > 0
    assert results["train_examples_per_second"] > 0 and results["wall_time_s"] > 0
    assert results["versions"]["torch"] and results["config"]["model"]["name"] == "tiny"
    assert "git_commit" in results
    assert (tmp_path / "csv" / "metrics.csv").exists()
    assert "dev validation/accuracy = " in proc.stdout


def test_multirun_sweeps_the_layer_with_one_result_per_job(tmp_path):
    run_cli("-m", *FAST, "trainer.max_epochs=1", "layer=0,3", f"hydra.sweep.dir={tmp_path}")
    layers = {json.loads((tmp_path / str(i) / "results.json").read_text())["layer"] for i in (0, 1)}
    assert layers == {0, 3}


def test_multirun_records_a_failed_job_and_goes_on(tmp_path):
    run_cli("-m", *FAST, "trainer.max_epochs=1", "layer=9,1", f"hydra.sweep.dir={tmp_path}", expect=1)
    failed = json.loads((tmp_path / "0" / "results.json").read_text())
    assert failed["status"] == "failed" and "layer=9 is out of range" in failed["error"]
    assert json.loads((tmp_path / "1" / "results.json").read_text())["status"] == "finished"


def test_mlm_head_trains_nothing_but_the_prompt(compose_cfg):
    """head=mlm reads the frozen MLM head through label words; only the generator trains."""
    import torch

    from idspam.runner.train import train

    torch.manual_seed(0)
    results = train(compose_cfg(*FAST, "head=mlm", "trainer.max_epochs=1"))
    assert results["parameters"]["head"] == 0 and not results["parameters"]["head_counted_in_trainable"]
    assert results["parameters"]["trainable"] == results["parameters"]["method"]
    assert results["status"] == "finished"


def test_regression_task_trains_with_a_one_output_head(compose_cfg, tmp_path):
    from idspam.runner.train import train

    rows = "sentence,score\n" + "".join(f"sentence number {i},{i % 5}.0\n" for i in range(40))
    (tmp_path / "train.csv").write_text(rows)
    results = train(compose_cfg(*FAST, "task=csv", f"task.train_file={tmp_path / 'train.csv'}",
                                f"task.validation_file={tmp_path / 'train.csv'}", "task.label_column=score",
                                "task.regression=true", "trainer.max_epochs=1"))
    assert results["monitor"] == "validation/pearson" and results["parameters"]["head"] == 32 + 1


@needs_glue
@pytest.mark.slow
def test_minilm_on_sst2_learns(tmp_path):
    """Real data, real backbone: ID-SPAM on frozen MiniLM, SST-2 subsample; the loss falls and the
    validation metric is written."""
    run_cli("task=sst2", "model=minilm", f"data_dir={GLUE_DIR}", "task.max_train_samples=640",
            "task.max_eval_samples=200", "task.max_length=64", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}",
            timeout=600)
    results = json.loads((tmp_path / "results.json").read_text())
    losses = [e["train_loss"] for e in results["epochs"]]
    assert losses[-1] < losses[0] - 0.05, losses
    assert results["best"]["value"] > 0.6, results["best"]


@pytest.mark.slow
@needs_glue
def test_every_method_runs_on_mrpc_with_minilm(tmp_path):
    """Real data, real backbone: one multirun over `method=`; every job finishes and writes its metric."""
    from idspam.methods import METHODS

    methods = sorted(METHODS)
    run_cli("-m", "task=mrpc", "model=minilm", f"data_dir={GLUE_DIR}", "task.max_train_samples=48",
            "task.max_eval_samples=32", "task.max_length=48", "trainer.max_epochs=1", "logger=none",
            f"method={','.join(methods)}", f"hydra.sweep.dir={tmp_path}", timeout=900)
    results = {r["method"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("*/results.json"))}
    assert sorted(results) == methods
    for name, r in results.items():
        assert r["status"] == "finished", (name, r.get("error"))
        assert 0.0 <= r["best"]["value"] <= 1.0 and r["monitor"] == "validation/acc_f1", name
    assert results["lpt"]["layer"] == 3 and results["prompt_tuning"]["layer"] == 0 and results["lora"]["layer"] == 0
    trainable = {name: r["parameters"]["method"] for name, r in results.items()}
    assert trainable["prompt_tuning"] == 10 * 384 and trainable["finetune"] > 20_000_000
    assert trainable["lora"] == 6 * 2 * 2 * 8 * 384


def test_wandb_logger_works_offline(compose_cfg, monkeypatch):
    from idspam.runner.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(*FAST, "logger=wandb", "trainer.max_epochs=1")
    results = train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert results["status"] == "finished" and len(runs) == 1
    assert cfg.logger.wandb.group == "demo-tiny" and "layer=2" in cfg.logger.wandb.tags


def test_mnli_reports_matched_and_mismatched(compose_cfg, tmp_path):
    """Both MNLI dev sets are evaluated every epoch; the best epoch is picked on matched."""
    from idspam.runner.train import train

    folder = tmp_path / "glue" / "MNLI"
    folder.mkdir(parents=True)
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    labels = ["entailment", "neutral", "contradiction"]
    for name, n in (("train.tsv", 30), ("dev_matched.tsv", 9), ("dev_mismatched.tsv", 6)):
        rows = "".join(f"{i}\t0\t0\tfiction\tpremise {i}\thypothesis {i}\tx\t{labels[i % 3]}\n" for i in range(n))
        (folder / name).write_text(header + rows)
    results = train(compose_cfg("model=tiny", "task=mnli", f"data_dir={tmp_path / 'glue'}", "trainer.max_epochs=1"))
    assert results["monitor"] == "validation_matched/accuracy"
    assert results["data"] == {"train": 30, "validation_matched": 9, "validation_mismatched": 6}
    epoch = results["epochs"][0]
    assert {"validation_matched/accuracy", "validation_mismatched/accuracy"} <= set(epoch)
    mismatched = epoch["validation_mismatched/accuracy"]
    assert mismatched * 6 == pytest.approx(round(mismatched * 6))


def test_sentence_pairs_on_a_single_token_type_backbone(compose_cfg, tmp_path):
    """RoBERTa has one token type: segment ids a (BERT) tokenizer emits for pairs must not reach it."""
    from idspam.runner.train import train

    rows = "premise,hypothesis,label\n" + "".join(f"premise {i},hypothesis {i},{i % 2}\n" for i in range(24))
    (tmp_path / "pairs.csv").write_text(rows)
    results = train(compose_cfg("model=tiny", "model.arch.type_vocab_size=1", "task=csv",
                                f"task.train_file={tmp_path / 'pairs.csv'}",
                                f"task.validation_file={tmp_path / 'pairs.csv'}",
                                "task.text_columns=[premise,hypothesis]", "trainer.max_epochs=1"))
    assert results["status"] == "finished"
