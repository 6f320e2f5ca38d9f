"""SuperGLUE and IMDB tasks, grouped scoring (COPA, MultiRC), and zero-shot / few-shot transfer."""

import json
from collections import Counter

import pytest
import torch

from idspam import tasks
from idspam.config import TaskConfig
from idspam.errors import UserError
from idspam.records import expand
from idspam.runner.metrics import GroupMetrics

from .conftest import SHARED_DATA, needs_data
from .test_run import run_cli

# (task, split) -> examples, label counts by label name, groups (the official counts in ../shared/data)
OFFICIAL = {
    ("cb", "train"): (250, {"contradiction": 119, "entailment": 115, "neutral": 16}, 0),
    ("cb", "validation"): (56, {"contradiction": 28, "entailment": 23, "neutral": 5}, 0),
    ("copa", "validation"): (200, {"wrong": 100, "right": 100}, 100),
    ("multirc", "validation"): (4848, {"True": 2075, "False": 2773}, 953),
    ("boolq", "validation"): (3270, {"True": 2033, "False": 1237}, 0),
    ("wic", "validation"): (638, {"True": 319, "False": 319}, 0),
    ("wsc", "validation"): (104, {"True": 38, "False": 66}, 0),
    ("rte_sg", "validation"): (277, {"entailment": 146, "not_entailment": 131}, 0),
    ("imdb", "validation"): (25000, {"negative": 12500, "positive": 12500}, 0),
}


@needs_data
@pytest.mark.parametrize("name, split", sorted(OFFICIAL))
def test_local_files_give_the_official_counts(name, split):
    spec = tasks.SPECS[name]
    data = tasks.load_split(spec, TaskConfig(name=name), split, str(SHARED_DATA), 0)
    rows, labels, groups = OFFICIAL[name, split]
    assert len(data["label"]) == len(data["text"]) == rows
    assert Counter(spec.label_names[i] for i in data["label"]) == labels
    assert len(set(data.get("group", []))) == groups


@needs_data
def test_copa_examples_pair_each_choice_with_the_premise():
    data = tasks.load_split(tasks.SPECS["copa"], TaskConfig(name="copa"), "validation", str(SHARED_DATA), 0)
    # {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
    #  "choice2": "Water flowed from the spout.", "question": "effect", "label": 1}
    assert data["text"][:2] == [("The man turned on the faucet.", "so the toilet filled with water."),
                                ("The man turned on the faucet.", "so water flowed from the spout.")]
    assert data["label"][:2] == [0, 1] and data["group"][0] == data["group"][1] != data["group"][2]


def test_grouped_subsample_keeps_whole_questions(tmp_path):
    record = {"idx": 0, "passage": {"text": "P", "questions": [
        {"idx": q, "question": f"q{q}", "answers": [{"text": "a", "label": 1}, {"text": "b", "label": 0}]}
        for q in range(5)]}}
    (tmp_path / "MultiRC").mkdir()
    (tmp_path / "MultiRC" / "val.jsonl").write_text(json.dumps(record) + "\n")
    data = tasks.load_split(tasks.SPECS["multirc"], TaskConfig(name="multirc", max_eval_samples=2), "validation",
                            str(tmp_path), 0)
    assert len(data["label"]) == 4 and len(set(data["group"])) == 2


def test_hub_records_convert_like_local_ones():
    local = {"idx": 3, "passage": {"text": "P", "questions": [
        {"idx": 7, "question": "Q", "answers": [{"text": "A", "idx": 0, "label": 1}]}]}}
    hub = {"paragraph": "P", "question": "Q", "answer": "A", "idx": {"paragraph": 3, "question": 7, "answer": 0},
           "label": 1}
    assert expand("multirc", [local])[:3] == expand("multirc", [hub])[:3] == ([("P", "Q A")], [1], [0])
    wsc_local = {"text": "T", "target": {"span1_text": "Ann", "span2_text": "she"}, "label": True}
    wsc_hub = {"text": "T", "span1_text": "Ann", "span2_text": "she", "label": 1}
    assert expand("wsc", [wsc_local])[0] == expand("wsc", [wsc_hub])[0] == [("T", "she refers to Ann")]


def test_copa_scoring_picks_the_higher_scoring_choice():
    metric = GroupMetrics("choice")
    # P(right) per example: group 0: 0.8 (right) vs 0.3 -> correct; group 1: 0.6 (wrong) vs 0.1 (right) -> wrong;
    # group 2: 0.2 (wrong) vs 0.4 (right): both below 0.5, the right one higher -> correct (it is a comparison)
    logits = torch.log(torch.tensor([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.9, 0.1], [0.8, 0.2], [0.6, 0.4]]))
    labels = torch.tensor([1, 0, 0, 1, 0, 1])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    metric.update(logits, labels, groups)
    assert metric.compute()["accuracy"].item() == pytest.approx(2 / 3)


def test_multirc_scoring_f1a_em_and_accuracy():
    metric = GroupMetrics("multirc")
    # question 0: both answers right; question 1: one of two wrong (a false positive)
    probs = torch.tensor([0.9, 0.1, 0.8, 0.7])
    logits = torch.log(torch.stack([1 - probs, probs], dim=1))
    labels, groups = torch.tensor([1, 0, 1, 0]), torch.tensor([5, 5, 9, 9])
    metric.update(logits, labels, groups)
    values = {k: v.item() for k, v in metric.compute().items()}
    # predicted positives 3, true positives 2, gold positives 2: F1 = 2*2 / (3 + 2)
    assert values == pytest.approx({"f1a": 0.8, "em": 0.5, "accuracy": 0.75})


TINY = ["model=tiny", "trainer.max_epochs=1", "logger=none", "task.max_train_samples=64", "task.max_eval_samples=40"]


@needs_data
def test_zero_shot_transfer_reports_both_tasks(compose_cfg):
    from idspam.runner.train import train

    results = train(compose_cfg(*TINY, "task=sst2", f"data_dir={SHARED_DATA}", "eval_tasks=[imdb]"))
    metrics = results["best"]["metrics"]
    assert {"validation/accuracy", "imdb/accuracy", "imdb/macro_f1", "imdb/acc_f1"} <= set(metrics)
    assert metrics["imdb/acc_f1"] == pytest.approx((metrics["imdb/accuracy"] + metrics["imdb/macro_f1"]) / 2)
    assert results["data"] == {"train": 64, "validation": 40, "imdb": 40} and results["eval_tasks"] == ["imdb"]


@pytest.mark.parametrize("task, other", [("sst2", "rte"), ("mnli", "cb"), ("mrpc", "copa"), ("rte", "wnli")])
def test_transfer_between_label_spaces_is_refused(compose_cfg, task, other):
    from idspam.runner.checks import validate

    with pytest.raises(UserError, match=rf"eval_tasks=\[{other}\]: task '{other}' has labels .* which do not mean what "
                                        rf"the labels of '{task}'"):
        validate(compose_cfg(f"task={task}", f"eval_tasks=[{other}]", f"data_dir={SHARED_DATA}"))


def test_paraphrase_tasks_transfer_both_ways():
    from idspam.runner.checks import check_transfer

    check_transfer(tasks.SPECS["qqp"], tasks.SPECS["mrpc"], "qqp -> mrpc")
    check_transfer(tasks.SPECS["mrpc"], tasks.SPECS["qqp"], "mrpc -> qqp")
    check_transfer(tasks.SPECS["imdb"], tasks.SPECS["sst2"], "imdb -> sst2")


@needs_data
def test_few_shot_transfer_starts_from_the_adapter_and_draws_k_examples(compose_cfg, tmp_path):
    from idspam.adapter import read_adapter
    from idspam.runner.train import train

    source = tmp_path / "source"
    train(compose_cfg(*TINY, f"paths.output_dir={source}"))  # demo sentiment
    _, trained = read_adapter(source / "adapter")
    # no training batch (an epoch with limit_train_batches=0: max_epochs=0 is refused as an untrained run)
    results = train(compose_cfg("model=tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=0", "logger=none",
                                "task=sst2",
                                f"data_dir={SHARED_DATA}", f"init_from={source / 'adapter'}", "few_shot_k=24",
                                f"paths.output_dir={tmp_path / 'target'}"))
    assert results["data"]["train"] == 24 and results["init_from"] == str(source / "adapter")
    _, started = read_adapter(tmp_path / "target" / "adapter")  # no epoch ran: the adapter is the starting point
    assert started.keys() == trained.keys() and all(torch.equal(started[k], trained[k]) for k in trained)
    with pytest.raises(UserError, match="holds method=idspam at layer 2; this run is method=lpt at layer 2"):
        train(compose_cfg(*TINY, "method=lpt", "task=sst2", f"data_dir={SHARED_DATA}",
                          f"init_from={source / 'adapter'}"))


@pytest.mark.slow
@needs_data
def test_minilm_on_cb_and_sst2_to_imdb(tmp_path):
    """Real backbone, real data: a short CB run, and SST-2 -> IMDB zero-shot on an IMDB sample."""
    run_cli("task=cb", f"data_dir={SHARED_DATA}", "task.max_length=96", "task.max_train_samples=120",
            "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path / 'cb'}")
    cb = json.loads((tmp_path / "cb" / "results.json").read_text())
    assert cb["status"] == "finished" and "validation/macro_f1" in cb["best"]["metrics"]
    assert cb["data"] == {"train": 120, "validation": 56}
    run_cli("task=sst2", f"data_dir={SHARED_DATA}", "eval_tasks=[imdb]", "task.max_train_samples=320",
            "task.max_eval_samples=200", "task.max_length=64", "trainer.max_epochs=1", "logger=none",
            f"hydra.run.dir={tmp_path / 'sst2'}", timeout=600)
    sst2 = json.loads((tmp_path / "sst2" / "results.json").read_text())
    assert sst2["status"] == "finished" and 0.0 < sst2["best"]["metrics"]["imdb/acc_f1"] <= 1.0
    assert sst2["data"]["imdb"] == 200


@needs_data
def test_missing_transfer_task_file_is_named_before_any_weights(compose_cfg):
    from idspam.runner.checks import validate

    with pytest.raises(UserError,
                       match=r"missing data file '.*glue_data/imdb/test.tsv' for task 'imdb' \(validation\)"):
        validate(compose_cfg("task=sst2", "eval_tasks=[imdb]", f"data_dir={SHARED_DATA / 'glue_data'}"))
