"""Confidence intervals for the reproduction's claims.

Two bootstraps, both percentile intervals of a difference "A minus B" (in the unit of the metric):
- over seeds: the runs of A and B with the same seed form a pair (same training subsample, same data order);
  the seeds are resampled with replacement and the mean paired difference recomputed;
- over dev examples (paired): the dev examples are resampled with replacement and the metric of A and of B
  recomputed on the same resample (the mean over the seeds each has); for few seeds.

A family of claims is corrected with Holm's step-down procedure, expressed as intervals: sorted by their
bootstrap p-value, the k-th claim's interval has level 1 - alpha / (m - k + 1) while every claim before it
excluded 0, and keeps the level of the first claim that did not; so an interval excludes 0 exactly when Holm
rejects that claim's null hypothesis. The verdict compares the interval with the side the paper reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3  # fewer paired seeds than this: no interval over seeds, the claim is inconclusive
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass
class Estimate:
    """One claim's effect and its bootstrap distribution (`draws`, empty when there is too little data)."""

    effect: float
    draws: np.ndarray
    n: int  # the units resampled: seeds, or dev examples
    unit: str  # "seeds" or "dev examples"
    note: str = ""

    @property
    def p_value(self) -> float:
        """Two-sided bootstrap p-value of "no difference": twice the smaller tail mass at 0 (1 without draws)."""
        if not len(self.draws):
            return 1.0
        return float(min(1.0, 2 * min(np.mean(self.draws <= 0), np.mean(self.draws >= 0))))

    def interval(self, level: float) -> tuple[float, float]:
        if not len(self.draws):
            return (float("nan"), float("nan"))
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(self.draws, [tail, 100 - tail])
        return float(low), float(high)


@dataclass
class Decision:
    estimate: Estimate
    level: float
    low: float
    high: float
    verdict: str


def seed_bootstrap(a: Sequence[float], b: Sequence[float], draws: int = 10_000, seed: int = 0) -> Estimate:
    """Mean paired difference a - b over seeds (a[i] and b[i] share seed i), resampled over seeds."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1:
        raise ValueError("seed_bootstrap takes one value per seed for each side")
    effect = float(d.mean()) if len(d) else float("nan")
    if len(d) < MIN_SEEDS:
        return Estimate(effect, np.empty(0), len(d), "seeds", f"{len(d)} paired seeds (< {MIN_SEEDS}): no interval")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(d), size=(draws, len(d)))
    return Estimate(effect, d[picks].mean(axis=1), len(d), "seeds")


def accuracy(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Accuracy of each row of `pred` (runs x examples) against `label`."""
    return (pred == label).mean(axis=-1)


def macro_f1(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    classes = np.union1d(np.unique(label), np.unique(pred))
    scores = []
    for c in classes:
        tp = ((pred == c) & (label == c)).sum(axis=-1)
        fp = ((pred == c) & (label != c)).sum(axis=-1)
        fn = ((pred != c) & (label == c)).sum(axis=-1)
        denom = 2 * tp + fp + fn
        scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(scores, axis=0)


def acc_f1(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The paper's MRPC / QQP / transfer metric: the mean of accuracy and macro-F1."""
    return (accuracy(pred, label) + macro_f1(pred, label)) / 2


EXAMPLE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": accuracy, "macro_f1": macro_f1, "acc_f1": acc_f1}


def example_bootstrap(pred_a: np.ndarray, pred_b: np.ndarray, label: np.ndarray, metric: str = "accuracy",
                      draws: int = 2_000, seed: int = 0) -> Estimate:
    """Paired bootstrap over dev examples: `pred_a` (runs of A x examples) and `pred_b` (runs of B x examples)
    predict the same examples `label`; each draw resamples the examples and takes the metric's mean over A's
    runs minus its mean over B's runs."""
    if metric not in EXAMPLE_METRICS:
        raise ValueError(f"no per-example bootstrap for metric {metric!r}; one of {sorted(EXAMPLE_METRICS)}")
    fn = EXAMPLE_METRICS[metric]
    pred_a, pred_b, label = np.atleast_2d(pred_a), np.atleast_2d(pred_b), np.asarray(label)
    if pred_a.shape[1] != len(label) or pred_b.shape[1] != len(label):
        raise ValueError(f"predictions of {pred_a.shape[1]} and {pred_b.shape[1]} examples for {len(label)} labels")
    effect = float(fn(pred_a, label).mean() - fn(pred_b, label).mean())
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for i in range(draws):
        idx = rng.integers(0, len(label), size=len(label))
        out[i] = fn(pred_a[:, idx], label[idx]).mean() - fn(pred_b[:, idx], label[idx]).mean()
    return Estimate(effect, out, len(label), "dev examples")


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The interval level of each claim under Holm's step-down correction (see the module docstring)."""
    m = len(p_values)
    levels = [0.0] * m
    stopped_at = None
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        a = alpha / (m - rank) if stopped_at is None else stopped_at
        levels[i] = 1 - a
        if stopped_at is None and p_values[i] >= a:
            stopped_at = a
    return levels


def verdict(low: float, high: float, paper_sign: int) -> str:
    """"holds" when the interval lies entirely on the paper's side of 0, "does not hold" when entirely on the
    other side, "inconclusive" when it contains 0 (or there is no interval)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if low > 0 or high < 0:
        return HOLDS if (low > 0) == (paper_sign > 0) else FAILS
    return INCONCLUSIVE


def decide(estimates: Sequence[Estimate], paper_signs: Sequence[int], alpha: float = 0.05) -> list[Decision]:
    """Holm-corrected intervals and verdicts for a family of claims."""
    levels = holm_levels([e.p_value for e in estimates], alpha)
    out = []
    for est, level, sign in zip(estimates, levels, paper_signs, strict=True):
        low, high = est.interval(level)
        out.append(Decision(est, level, low, high, verdict(low, high, sign)))
    return out
