import pytest
import torch

from idspam import tasks
from idspam.runner.metrics import TaskMetrics


def logits_for(preds, k=2):
    return torch.nn.functional.one_hot(torch.tensor(preds), k).float()


def test_mrpc_metrics_include_the_papers_mean_of_accuracy_and_macro_f1():
    m = TaskMetrics(tasks.SPECS["mrpc"])
    labels, preds = [1, 1, 1, 0, 0, 1], [1, 1, 0, 0, 1, 1]
    m.update(logits_for(preds[:3]), torch.tensor(labels[:3]))
    m.update(logits_for(preds[3:]), torch.tensor(labels[3:]))
    v = m.compute()
    # accuracy 4/6; positive-class F1: tp=3 fp=1 fn=1 -> 0.75; negative-class F1: tp=1 fp=1 fn=1 -> 0.5
    assert v["accuracy"] == pytest.approx(4 / 6)
    assert v["f1"] == pytest.approx(0.75)
    assert v["macro_f1"] == pytest.approx(0.625)
    assert v["acc_f1"] == pytest.approx((4 / 6 + 0.625) / 2)
    m.reset()
    m.update(logits_for([0, 1]), torch.tensor([0, 1]))
    assert m.compute()["accuracy"] == 1.0


def test_cola_mcc_and_stsb_correlations():
    m = TaskMetrics(tasks.SPECS["cola"])
    m.update(logits_for([1, 0, 1, 0]), torch.tensor([1, 0, 0, 1]))
    assert m.compute()["mcc"] == pytest.approx(0.0)
    r = TaskMetrics(tasks.SPECS["stsb"])
    r.update(torch.tensor([[1.0], [2.0], [3.0], [5.0]]), torch.tensor([2.0, 4.0, 6.0, 10.0]))
    v = r.compute()
    assert v["pearson"] == pytest.approx(1.0) and v["spearman"] == pytest.approx(1.0)
    assert v["corr"] == pytest.approx(1.0)


def test_three_class_accuracy_for_mnli():
    m = TaskMetrics(tasks.SPECS["mnli"])
    m.update(logits_for([0, 1, 2, 2], k=3), torch.tensor([0, 1, 2, 0]))
    assert m.compute()["accuracy"] == pytest.approx(0.75) and "f1" not in m.compute()


@pytest.mark.parametrize("name", sorted(tasks.SPECS))
def test_every_task_reports_its_declared_metrics(name):
    spec = tasks.SPECS[name]
    m = TaskMetrics(spec)
    if spec.is_regression:
        m.update(torch.tensor([[0.1], [0.5], [0.9]]), torch.tensor([0.0, 0.6, 1.0]))
    else:
        groups = torch.tensor([0, 0, 1]) if spec.grouped else None  # COPA, MultiRC score groups of examples
        m.update(logits_for([0, 1, 1], k=spec.num_labels), torch.tensor([0, 1, 0]), groups)
    assert set(m.compute()) == set(spec.metric_names) and spec.metric in spec.metric_names
