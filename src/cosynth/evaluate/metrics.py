"""Binary classification metrics at a threshold, as the bias-study paper reports them."""

from __future__ import annotations

import numpy as np


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC from its value and class sizes (Hanley & McNeil, Radiology 1982).

    It says how far apart two AUCs on a few hundred crystals must be before the difference means anything.

    Args:
        auc: the ROC AUC.
        n_pos, n_neg: the numbers of positives and negatives.

    Returns:
        The standard error.
    """
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def binary_metrics(y_true, likelihood, threshold: float = 0.5) -> dict:
    """ROC AUC, accuracy, precision, recall (sensitivity), specificity, F1 and the confusion counts at ``threshold``.

    Undefined ratios (e.g. precision with no positive prediction) are reported as None rather than a
    misleading 0; ROC AUC is None when only one class is present.

    Args:
        y_true: binary labels.
        likelihood: predicted likelihoods; NaN rows are left out.
        threshold: likelihood at or above which a row is predicted positive.

    Returns:
        A dict of the metrics with ``n``, ``threshold`` and ``confusion`` (tp, fp, tn, fn).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(int)
    p = np.asarray(likelihood, dtype=float)
    keep = ~np.isnan(p)
    y, p = y[keep], p[keep]
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())

    def ratio(a, b):
        return None if b == 0 else a / b

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = None if not precision or not recall else 2 * precision * recall / (precision + recall)
    return {
        "n": int(len(y)),
        "threshold": threshold,
        "roc_auc": float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None,
        "accuracy": ratio(tp + tn, len(y)),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": f1,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }
