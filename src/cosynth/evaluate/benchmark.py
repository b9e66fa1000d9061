"""Scores of a synthesizability model judged as the benchmark does: shortcuts out, CIs in.

Every metric comes with a 95 % bootstrap interval that resamples test *formulas* (the split is
grouped by formula, so formulas are the independent units). Beside the usual ROC/PR AUC, the
threshold metrics (at a threshold fixed on validation), Brier score and expected calibration
error, a score is judged where shortcuts cannot help it:

* per origin and as the **mean within-origin AUC** (origins that have both classes): an
  origin-only score gets 0.5 there;
* on **polymorph pairs**: for each test formula that has both labels, the share of its
  (ICSD-tagged, theoretical) pairs ranked the right way round, averaged over those formulas, so
  that each formula counts once; a composition-only score gets 0.5 there. The share pooled over
  all pairs is kept beside it (``polymorph_pair_auc_pooled``), but one formula with many
  polymorphs can own most pairs (SiO2 holds 86 % of them in the benchmark's test split), so the
  pooled share mostly measures that one formula.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["expected_calibration_error", "polymorph_pair_auc", "polymorph_pair_shares", "score_report",
           "threshold_from_validation", "within_origin_auc"]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def expected_calibration_error(y, p, bins: int = 10) -> float:
    """Mean |observed positive rate − mean likelihood| over ``bins`` equal-width bins, weighted by size."""
    y, p = np.asarray(y, float), np.clip(np.asarray(p, float), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(y[inside].mean() - p[inside].mean())
    return float(total / max(len(y), 1))


def threshold_from_validation(y_val, p_val) -> float:
    """The likelihood threshold with the best balanced accuracy on the validation rows."""
    y, p = np.asarray(y_val, int), np.asarray(p_val, float)
    candidates = np.unique(np.quantile(p, np.linspace(0.01, 0.99, 99)))
    best, best_score = 0.5, -1.0
    for t in candidates:
        pred = p >= t
        tpr = pred[y == 1].mean() if (y == 1).any() else 0.0
        tnr = (~pred[y == 0]).mean() if (y == 0).any() else 0.0
        if (tpr + tnr) / 2 > best_score:
            best, best_score = float(t), (tpr + tnr) / 2
    return best


def within_origin_auc(y, p, origin) -> tuple[float, dict[str, float]]:
    """(mean of the per-origin AUCs over origins with both classes, AUC per such origin)."""
    frame = pd.DataFrame({"y": np.asarray(y, int), "p": np.asarray(p, float), "o": np.asarray(origin)})
    per = {str(o): _auc(g["y"].to_numpy(), g["p"].to_numpy()) for o, g in frame.groupby("o") if g["y"].nunique() == 2}
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def _pair_counts(y, p, formula) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(formulas, pairs ranked right per formula (ties half), pairs per formula) for formulas with both labels."""
    frame = pd.DataFrame({"y": np.asarray(y, int), "p": np.asarray(p, float), "f": np.asarray(formula)})
    names, right, pairs = [], [], []
    for name, g in frame.groupby("f", sort=True):
        pos, neg = g.loc[g["y"] == 1, "p"].to_numpy(), g.loc[g["y"] == 0, "p"].to_numpy()
        if len(pos) and len(neg):
            diff = pos[:, None] - neg[None, :]
            names.append(name)
            right.append(float((diff > 0).sum() + 0.5 * (diff == 0).sum()))
            pairs.append(diff.size)
    return np.asarray(names, dtype=object), np.asarray(right, float), np.asarray(pairs, float)


def _pair_shares(right: np.ndarray, pairs: np.ndarray, times: np.ndarray | None = None) -> tuple[float, float]:
    """(mean of the per-formula shares, pooled share) of per-formula counts, each formula drawn ``times``."""
    times = np.ones(len(pairs)) if times is None else times
    if not (times * pairs).sum():
        return float("nan"), float("nan")
    mean = float((times * right / pairs).sum() / times.sum())
    return mean, float((times * right).sum() / (times * pairs).sum())


def polymorph_pair_shares(y, p, formula) -> dict:
    """The polymorph-pair scores of a set of rows.

    Returns:
        ``{"mean": mean over formulas with both labels of the share of their (positive, negative)
        pairs ranked right (ties half), "pooled": the share over all pairs, "pairs", "formulas",
        "largest_formula", "largest_pairs"}``.
    """
    names, right, pairs = _pair_counts(y, p, formula)
    mean, pooled = _pair_shares(right, pairs)
    largest = int(np.argmax(pairs)) if len(pairs) else None
    return {"mean": mean, "pooled": pooled, "pairs": int(pairs.sum()), "formulas": int(len(pairs)),
            "largest_formula": None if largest is None else str(names[largest]),
            "largest_pairs": 0 if largest is None else int(pairs[largest])}


def polymorph_pair_auc(y, p, formula) -> tuple[float, int]:
    """(mean over formulas with both labels of the share of their pairs ranked right; number of pairs)."""
    shares = polymorph_pair_shares(y, p, formula)
    return shares["mean"], shares["pairs"]


def _point_metrics(y, p, origin, formula, threshold: float, pair: tuple[float, float] | None = None) -> dict:
    """The metrics of one (resampled) set of rows; ``pair`` (mean, pooled) given when computed elsewhere."""
    from sklearn.metrics import average_precision_score

    pred = p >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    tn, fn = int((~pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    within, _ = within_origin_auc(y, p, origin)
    if pair is None:
        _, right, pairs = _pair_counts(y, p, formula)
        pair = _pair_shares(right, pairs)
    return {"roc_auc": _auc(y, p),
            "pr_auc": float(average_precision_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
            "accuracy": (tp + tn) / max(len(y), 1),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "brier": float(np.mean((p - y) ** 2)), "ece": expected_calibration_error(y, p),
            "within_origin_auc": within, "polymorph_pair_auc": pair[0], "polymorph_pair_auc_pooled": pair[1]}


def score_report(y, p, origin, formula, *, threshold: float, n_boot: int = 200, seed: int = 0) -> dict:
    """Every benchmark metric of one score on the rows given, each with a 95 % bootstrap CI.

    Args:
        y: labels (1 = ICSD-tagged).
        p: the score, a likelihood in [0, 1] (ranking metrics accept any real score).
        origin, formula: each row's origin and reduced formula.
        threshold: the likelihood threshold for accuracy, precision, recall and specificity
            (fixed on validation: :func:`threshold_from_validation`).
        n_boot, seed: bootstrap replicates over formulas, and their seed.

    Returns:
        ``{"n", "threshold", "metrics": {name: value}, "ci": {name: [low, high]}, "per_origin":
        {origin: {"n", "positives", "roc_auc"}}, "polymorph_pairs": :func:`polymorph_pair_shares`}``.
    """
    y, p = np.asarray(y, int), np.asarray(p, float)
    origin, formula = np.asarray(origin).astype(str), np.asarray(formula).astype(str)
    metrics = _point_metrics(y, p, origin, formula, threshold)
    order = pd.Series(np.arange(len(y))).groupby(formula, sort=True)
    names = np.asarray(list(order.groups), dtype=object)
    groups = [np.asarray(v) for v in order.apply(list)]
    # polymorph pairs never cross formulas: per-formula counts, reweighted by how often a formula is drawn
    pair_names, right, pairs = _pair_counts(y, p, formula)
    in_pairs = np.searchsorted(names, pair_names) if len(pair_names) else np.zeros(0, int)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    draws = {k: [] for k in metrics}
    for _ in range(n_boot):
        drawn = rng.integers(0, len(groups), len(groups))
        take = np.concatenate([groups[i] for i in drawn])
        times = np.bincount(drawn, minlength=len(groups))[in_pairs]
        pair = _pair_shares(right, pairs, times)
        for k, v in _point_metrics(y[take], p[take], origin[take], formula[take], threshold, pair).items():
            draws[k].append(v)
    ci = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}
    _, per = within_origin_auc(y, p, origin)
    per_origin = {str(o): {"n": int((origin == o).sum()), "positives": int(y[origin == o].sum()),
                           "roc_auc": per.get(str(o))} for o in np.unique(origin)}
    return {"n": int(len(y)), "threshold": float(threshold), "metrics": metrics, "ci": ci,
            "per_origin": per_origin, "polymorph_pairs": polymorph_pair_shares(y, p, formula)}
