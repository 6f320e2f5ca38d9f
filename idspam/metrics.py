"""Per-task validation metrics (torchmetrics), including the paper's mean of accuracy and macro-F1."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from .tasks import TaskSpec


class TaskMetrics(nn.Module):
    """Accumulates predictions of one evaluation split and computes every metric the task reports.

    classification: accuracy, macro_f1, acc_f1 (mean of the two, the paper's MRPC/QQP score),
                    f1 (binary F1 of the positive class, GLUE's MRPC/QQP F1), mcc (CoLA)
    regression:     pearson, spearman, corr (their mean), mse
    """

    def __init__(self, spec: TaskSpec):
        super().__init__()
        self.regression = spec.is_regression
        if self.regression:
            metrics = {"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef(), "mse": MeanSquaredError()}
        else:
            k = spec.num_labels
            metrics = {
                "accuracy": MulticlassAccuracy(k, average="micro"),
                "macro_f1": MulticlassF1Score(k, average="macro"),
                "mcc": MulticlassMatthewsCorrCoef(k),
            }
            if k == 2:
                metrics["f1"] = BinaryF1Score()
        self.collection = MetricCollection(metrics)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if self.regression:
            self.collection.update(logits.squeeze(-1).float(), labels.float())
        else:
            self.collection.update(logits.argmax(-1), labels)

    def compute(self) -> dict[str, float]:
        values = {k: float(v) for k, v in self.collection.compute().items()}
        if self.regression:
            values["corr"] = (values["pearson"] + values["spearman"]) / 2
        else:
            values["acc_f1"] = (values["accuracy"] + values["macro_f1"]) / 2
        return values

    def reset(self) -> None:
        self.collection.reset()
