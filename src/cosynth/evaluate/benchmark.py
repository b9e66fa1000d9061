"""Scores of a synthesizability model judged as the benchmark does: shortcuts out, CIs in.

Every metric comes with a 95 % bootstrap interval that resamples test *formulas* (the split is
grouped by formula, so formulas are the independent units). Beside the usual ROC/PR AUC, the
threshold metrics (at a threshold fixed on validation), Brier score and expected calibration
error, a score is judged where shortcuts cannot help it:

* per origin and as the **mean within-origin AUC** (origins that have both classes): an
  origin-only score gets 0.5 there;
* on **polymorph pairs**: for each group of test rows of one formula *and one origin* that has
  both labels, the share of its (ICSD-tagged, theoretical) pairs ranked the right way round,
  averaged over the groups so that each counts once; a composition-only or an origin-only score
  gets 0.5 there. Two looser variants are kept beside it, because each lets a shortcut or one
  formula in: pairs of one formula from any origin (``polymorph_pair_auc_any_origin``; the
  polymorphs of a formula often come from different files, so the origin alone ranks them
  better than chance), and every pair counted once (``pairs``/``right`` in
  :func:`polymorph_pair_shares`; one formula with many polymorphs, SiO2 in the benchmark's test
  split, can own most pairs).
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


def _pair_counts(y, p, formula, origin=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group of rows with one formula (and one origin, when given) that has both labels: (its
    formula, its name, pairs ranked right (ties half), pairs)."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    frame = pd.DataFrame({"f": np.asarray(formula), "o": "" if origin is None else np.asarray(origin)})
    group = frame.groupby(["f", "o"], sort=True).ngroup().to_numpy()
    size, positives = np.bincount(group), np.bincount(group, weights=y)
    order = np.argsort(group, kind="stable")  # rows of one group together, in their own order
    starts = np.concatenate([[0], np.cumsum(size)])
    formulas, names, right, pairs = [], [], [], []
    for k in np.flatnonzero((positives > 0) & (positives < size)):  # only groups with both labels
        rows = order[starts[k]:starts[k + 1]]
        pos, neg = p[rows][y[rows] == 1], p[rows][y[rows] == 0]
        diff = pos[:, None] - neg[None, :]
        f, o = frame["f"].iat[rows[0]], frame["o"].iat[rows[0]]
        formulas.append(f)
        names.append(f"{f} ({o})" if o else f)
        right.append(float((diff > 0).sum() + 0.5 * (diff == 0).sum()))
        pairs.append(diff.size)
    return (np.asarray(formulas, dtype=object), np.asarray(names, dtype=object), np.asarray(right, float),
            np.asarray(pairs, float))


def _mean_share(right: np.ndarray, pairs: np.ndarray, times: np.ndarray | None = None) -> float:
    """The mean over groups of their share of pairs ranked right, each group counted ``times``."""
    times = np.ones(len(pairs)) if times is None else times
    return float((times * right / pairs).sum() / times.sum()) if times.sum() else float("nan")


def polymorph_pair_shares(y, p, formula, origin=None) -> dict:
    """The polymorph-pair score of a set of rows, with what it was computed over.

    Args:
        y, p: labels and scores.
        formula: each row's reduced formula.
        origin: each row's origin; given, pairs are only made within one origin too.

    Returns:
        ``{"mean": mean over groups with both labels of the share of their (positive, negative)
        pairs ranked right (ties half), "groups", "pairs", "right", "largest_group",
        "largest_pairs"}``.
    """
    _, names, right, pairs = _pair_counts(y, p, formula, origin)
    largest = int(np.argmax(pairs)) if len(pairs) else None
    return {"mean": _mean_share(right, pairs), "groups": int(len(pairs)), "pairs": int(pairs.sum()),
            "right": float(right.sum()), "largest_group": None if largest is None else str(names[largest]),
            "largest_pairs": 0 if largest is None else int(pairs[largest])}


def polymorph_pair_auc(y, p, formula, origin=None) -> tuple[float, int]:
    """(mean over groups of one formula (and origin) with both labels of the share of their pairs
    ranked right; number of pairs)."""
    shares = polymorph_pair_shares(y, p, formula, origin)
    return shares["mean"], shares["pairs"]


def _point_metrics(y, p, origin, formula, threshold: float, pairs: tuple[float, float] | None = None) -> dict:
    """The metrics of one (resampled) set of rows; ``pairs`` (within origin, any origin) given when
    computed elsewhere."""
    from sklearn.metrics import average_precision_score

    pred = p >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    tn, fn = int((~pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    within, _ = within_origin_auc(y, p, origin)
    if pairs is None:
        pairs = polymorph_pair_auc(y, p, formula, origin)[0], polymorph_pair_auc(y, p, formula)[0]
    return {"roc_auc": _auc(y, p),
            "pr_auc": float(average_precision_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
            "accuracy": (tp + tn) / max(len(y), 1),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "brier": float(np.mean((p - y) ** 2)), "ece": expected_calibration_error(y, p),
            "within_origin_auc": within, "polymorph_pair_auc": pairs[0], "polymorph_pair_auc_any_origin": pairs[1]}


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
        {origin: {"n", "positives", "roc_auc"}}, "polymorph_pairs": :func:`polymorph_pair_shares` within
        origins, "polymorph_pairs_any_origin": the same over any origin}``.
    """
    y, p = np.asarray(y, int), np.asarray(p, float)
    origin, formula = np.asarray(origin).astype(str), np.asarray(formula).astype(str)
    metrics = _point_metrics(y, p, origin, formula, threshold)
    order = pd.Series(np.arange(len(y))).groupby(formula, sort=True)
    names = np.asarray(list(order.groups), dtype=object)
    groups = [np.asarray(v) for v in order.apply(list)]
    # polymorph pairs never cross formulas: per-group counts, reweighted by how often their formula is drawn
    counts = [_pair_counts(y, p, formula, origin), _pair_counts(y, p, formula)]
    at = [np.searchsorted(names, c[0]) if len(c[0]) else np.zeros(0, int) for c in counts]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    draws = {k: [] for k in metrics}
    for _ in range(n_boot):
        drawn = rng.integers(0, len(groups), len(groups))
        take = np.concatenate([groups[i] for i in drawn])
        times = np.bincount(drawn, minlength=len(groups))
        pairs = tuple(_mean_share(c[2], c[3], times[i]) for c, i in zip(counts, at))
        for k, v in _point_metrics(y[take], p[take], origin[take], formula[take], threshold, pairs).items():
            draws[k].append(v)
    ci = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
          if np.isfinite(v).any() else [float("nan")] * 2 for k, v in draws.items()}  # no draws, or none defined
    _, per = within_origin_auc(y, p, origin)
    per_origin = {str(o): {"n": int((origin == o).sum()), "positives": int(y[origin == o].sum()),
                           "roc_auc": per.get(str(o))} for o in np.unique(origin)}
    return {"n": int(len(y)), "threshold": float(threshold), "metrics": metrics, "ci": ci,
            "per_origin": per_origin, "polymorph_pairs": polymorph_pair_shares(y, p, formula, origin),
            "polymorph_pairs_any_origin": polymorph_pair_shares(y, p, formula)}
