"""Per-task validation metrics (torchmetrics), including the paper's mean of accuracy and macro-F1."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.utilities import dim_zero_cat

from ..tasks import TaskSpec


class GroupMetrics(Metric):
    """Metrics over groups of examples: COPA's choice accuracy (the example of a question with the
    highest P(label 1) is the answer) and MultiRC's F1 over all answers (f1a), exact match per
    question (em) and accuracy over answers."""

    full_state_update = False

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        for name in ("scores", "labels", "groups"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> None:
        self.scores.append(logits.float().softmax(-1)[:, 1])
        self.labels.append(labels)
        self.groups.append(groups)

    def compute(self) -> dict[str, torch.Tensor]:
        scores, labels, groups = (dim_zero_cat(x) for x in (self.scores, self.labels, self.groups))
        ids, index = groups.unique(return_inverse=True)
        if self.kind == "choice":
            best = torch.full((len(ids),), -1.0, device=scores.device).scatter_reduce(0, index, scores, "amax")
            picked = (scores == best[index]) & (labels == 1)  # the right choice scored highest
            return {"accuracy": torch.zeros(len(ids), device=scores.device).index_add(0, index, picked.float())
                    .clamp(max=1).mean()}
        predictions = (scores > 0.5).long()
        wrong = torch.zeros(len(ids), device=scores.device).index_add(0, index, (predictions != labels).float())
        tp = ((predictions == 1) & (labels == 1)).sum().float()
        f1a = 2 * tp / ((predictions == 1).sum() + (labels == 1).sum()).clamp(min=1)
        return {"f1a": f1a, "em": (wrong == 0).float().mean(), "accuracy": (predictions == labels).float().mean()}


class TaskMetrics(nn.Module):
    """Accumulates predictions of one evaluation split and computes every metric the task reports.

    classification: accuracy, macro_f1, acc_f1 (mean of the two, the paper's MRPC/QQP score),
                    f1 (binary F1 of the positive class, GLUE's MRPC/QQP F1), mcc (CoLA)
    regression:     pearson, spearman, corr (their mean), mse
    """

    def __init__(self, spec: TaskSpec):
        super().__init__()
        self.regression, self.grouped = spec.is_regression, spec.grouped
        if self.grouped:
            self.collection = GroupMetrics(self.grouped)
            return
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

    def update(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        if self.grouped:
            self.collection.update(logits, labels, groups)
        elif self.regression:
            self.collection.update(logits.squeeze(-1).float(), labels.float())
        else:
            self.collection.update(logits.argmax(-1), labels)

    def compute(self) -> dict[str, float]:
        values = {k: float(v) for k, v in self.collection.compute().items()}
        if self.grouped:
            return values
        if self.regression:
            values["corr"] = (values["pearson"] + values["spearman"]) / 2
        else:
            values["acc_f1"] = (values["accuracy"] + values["macro_f1"]) / 2
        return values

    def reset(self) -> None:
        self.collection.reset()


def label_word_metrics(picked: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, float]:
    """TaskMetrics' classification metrics when a prediction may be class k, "none of the k classes"."""
    from torchmetrics.functional.classification import multiclass_f1_score, multiclass_matthews_corrcoef

    per_class = multiclass_f1_score(picked, labels, k + 1, average=None)[:k]
    values = {"accuracy": float((picked == labels).float().mean()), "macro_f1": float(per_class.mean()),
              "mcc": float(multiclass_matthews_corrcoef(picked, labels, k + 1))}
    if k == 2:
        values["f1"] = float(per_class[1])
    values["acc_f1"] = (values["accuracy"] + values["macro_f1"]) / 2
    return values


def normalize_text(text: str) -> str:
    """What exact match compares: the text with surrounding and repeated whitespace removed."""
    return " ".join(text.split())


class TextMetrics(nn.Module):
    """Metrics on generated text (head=generate), computed offline:

    exact_match  generated text == the target as the tokenizer decodes it (whitespace normalised)
    chrf         corpus chrF (torchmetrics' CHRFScore: character n-grams, no downloads), 0..1
    and, for a classification task read as label words (`classes`), the task's classification metrics: a
    generation that is exactly the label word of a class predicts that class (a class's word is the reference
    of its examples); any other text is a class of its own, "no label word": wrong for accuracy, outside
    every class for F1 (macro-F1 averages the task's classes only), one more class for MCC.

    Predictions and references are kept as Python strings: under DDP each rank reports its own shard."""

    def __init__(self, spec: TaskSpec, classes: bool = False):
        super().__init__()
        self.spec, self.classes, self.num_labels = spec, classes, spec.num_labels
        self.predictions: list[str] = []
        self.references: list[str] = []
        self.labels: list[int] = []

    def update(self, predictions: list[str], references: list[str], labels: torch.Tensor | None = None) -> None:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        self.predictions += list(predictions)
        self.references += list(references)
        if self.classes:
            self.labels += [int(y) for y in labels]

    def compute(self) -> dict[str, float]:
        from torchmetrics.text import CHRFScore

        if not self.predictions:
            return {}
        pairs = list(zip(map(normalize_text, self.predictions), map(normalize_text, self.references), strict=True))
        values = {"exact_match": sum(p == r for p, r in pairs) / len(pairs),
                  "chrf": float(CHRFScore()(self.predictions, [[r] for r in self.references]))}
        if self.classes:
            words = {ref: label for (_, ref), label in zip(pairs, self.labels, strict=True)}
            labels = torch.tensor(self.labels)
            k = self.num_labels
            picked = torch.tensor([words.get(p, k) for p, _ in pairs])  # k: no label word
            values.update(label_word_metrics(picked, labels, k))
        return values

    def reset(self) -> None:
        self.predictions, self.references, self.labels = [], [], []
