"""task.heldout_samples: a validation split carved from the training file, the same for every method and run
seed, disjoint from the rows trained on and from the reported dev set; it picks the best epoch and the dev
metric is reported at that epoch."""

import json

import pytest

from idspam.config import TaskConfig
from idspam.errors import UserError
from idspam.tasks import HELDOUT, get_spec, load_split

from .conftest import GLUE_DIR, needs_glue
from .test_run import FAST, run_cli


def rows(data: dict) -> set:
    return set(zip(*(data[k] for k in sorted(data)), strict=True))


@needs_glue
def test_heldout_is_one_split_per_task_disjoint_from_training_and_dev():
    task = TaskConfig(name="sst2", heldout_samples=300, max_train_samples=2000)
    spec = get_spec(task)
    assert spec.eval_splits == (HELDOUT, "validation") and spec.table_split == "validation"
    dev = rows(load_split(spec, task, "validation", GLUE_DIR, seed=1))
    held = {seed: load_split(spec, task, HELDOUT, GLUE_DIR, seed) for seed in (1, 2, 3)}
    assert held[1] == held[2] == held[3] and len(held[1]["label"]) == 300  # the run seed does not move it
    held_rows = rows(held[1])
    assert not held_rows & dev
    full = load_split(spec, TaskConfig(name="sst2"), "train", GLUE_DIR, seed=0)
    assert held_rows <= rows(full)  # carved from the training file
    trained = set()
    for seed in (1, 2, 3):
        train = load_split(spec, task, "train", GLUE_DIR, seed)
        assert len(train["label"]) == 2000 and not rows(train) & held_rows  # never trained on
        trained |= rows(train)
    assert len(trained) > 2000  # the seeds still draw different training subsamples
    other = TaskConfig(name="sst2", heldout_samples=300, heldout_seed=1)
    assert rows(load_split(get_spec(other), other, HELDOUT, GLUE_DIR, 1)) != held_rows


def test_heldout_larger_than_the_training_set_is_refused():
    task = TaskConfig(name="demo", heldout_samples=10**6)
    with pytest.raises(UserError, match="heldout_samples=1000000 leaves no training data"):
        load_split(get_spec(task), task, "train", None, 0)


def test_run_picks_the_epoch_on_heldout_and_reports_dev_there(tmp_path):
    run_cli(*FAST, "task.heldout_samples=40", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["monitor"] == "heldout/accuracy" and results["table_metric"] == "validation/accuracy"
    assert results["data"] == {"train": 64, "heldout": 40, "validation": 32}
    best = max(results["epochs"], key=lambda e: e["heldout/accuracy"])
    assert results["best"]["epoch"] == best["epoch"]
    assert results["best"]["metrics"]["validation/accuracy"] == best["validation/accuracy"]
    task = TaskConfig(name="demo", heldout_samples=40, max_eval_samples=32)
    file_order = {split: load_split(get_spec(task), task, split, None, 42)["label"]
                  for split in (HELDOUT, "validation")}
    for epoch in results["epochs"]:  # per-example predictions of both splits, in file order (evaluated by length)
        preds = json.loads((tmp_path / "predictions" / f"epoch{epoch['epoch']}.json").read_text())
        assert preds["heldout"]["label"] == file_order[HELDOUT]
        assert preds["validation"]["label"] == file_order["validation"]
        assert len(preds["heldout"]["pred"]) == 40 and "row" not in preds["validation"]
        correct = [p == y for p, y in zip(preds["validation"]["pred"], preds["validation"]["label"], strict=True)]
        assert sum(correct) / len(correct) == pytest.approx(epoch["validation/accuracy"])
