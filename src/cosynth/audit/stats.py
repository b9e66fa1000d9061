"""Two-sample statistics and the shortcut score used by the audit.

Every function returns plain floats (JSON-ready). Two-sample tests answer "do these groups
differ at all?"; effect sizes (standardised mean difference, Wasserstein distance) answer
"by how much?"; the shortcut score answers the question that matters for a classifier: "how
well could a model separate the classes using this descriptor alone?".
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

MIN_GROUP = 5  # smaller groups give no meaningful distribution comparison


def _finite(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x[np.isfinite(x)]


def standardised_mean_difference(a, b) -> float:
    """Cohen's d with the pooled (average) variance: (mean_a − mean_b) / sqrt((s_a² + s_b²)/2).

    0.2 / 0.5 / 0.8 are Cohen's conventional small / medium / large effects.
    """
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2.0)
    if pooled == 0:
        return 0.0 if a.mean() == b.mean() else float(np.sign(a.mean() - b.mean()) * np.inf)
    return float((a.mean() - b.mean()) / pooled)


def rank_auc(a, b) -> float:
    """P(x_a > x_b) + ½ P(tie): the ROC AUC of the raw descriptor as a score for group a
    (Mann–Whitney U / (n_a n_b)). 0.5 = no separation; 0 or 1 = perfect."""
    a, b = _finite(a), _finite(b)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    return float(u / (len(a) * len(b)))


def compare_numeric(a, b) -> dict:
    """Distribution comparison of one numeric descriptor between groups a and b.

    Kolmogorov–Smirnov (largest CDF gap), k-sample Anderson–Darling (tail-sensitive; scipy caps
    its p-value to [0.001, 0.25], flagged by ``ad_pvalue_capped``), Wasserstein-1 distance (in
    the descriptor's own unit), standardised mean difference and the raw rank AUC.
    """
    a, b = _finite(a), _finite(b)
    out = {"n_a": int(len(a)), "n_b": int(len(b)),
           "mean_a": float(a.mean()) if len(a) else float("nan"),
           "mean_b": float(b.mean()) if len(b) else float("nan"),
           "median_a": float(np.median(a)) if len(a) else float("nan"),
           "median_b": float(np.median(b)) if len(b) else float("nan")}
    if len(a) < MIN_GROUP or len(b) < MIN_GROUP:
        out.update(ks_statistic=float("nan"), ks_pvalue=float("nan"), ad_statistic=float("nan"),
                   ad_pvalue=float("nan"), ad_pvalue_capped=False, wasserstein=float("nan"),
                   smd=float("nan"), rank_auc=float("nan"), note=f"fewer than {MIN_GROUP} values in a group")
        return out
    ks = stats.ks_2samp(a, b)
    if np.ptp(np.concatenate([a, b])) == 0:  # AD is undefined when every value is the same
        ad_stat, ad_p, capped = 0.0, 1.0, False
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns whenever it caps the p-value
            ad = stats.anderson_ksamp([a, b])
        ad_stat, ad_p = float(ad.statistic), float(ad.pvalue)
        capped = bool(ad_p <= 0.001 or ad_p >= 0.25)
    out.update(ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue), ad_statistic=ad_stat,
               ad_pvalue=ad_p, ad_pvalue_capped=capped, wasserstein=float(stats.wasserstein_distance(a, b)),
               smd=standardised_mean_difference(a, b), rank_auc=rank_auc(a, b))
    return out


def compare_categorical(a, b) -> dict:
    """Comparison of a categorical descriptor (e.g. crystal system): χ² test of independence,
    Cramér's V and the total-variation distance between the two frequency tables."""
    a = [x for x in a if x is not None and x == x]
    b = [x for x in b if x is not None and x == x]
    out = {"n_a": len(a), "n_b": len(b)}
    cats = sorted(set(a) | set(b))
    if len(a) < MIN_GROUP or len(b) < MIN_GROUP or len(cats) < 2:
        out.update(chi2=float("nan"), chi2_pvalue=float("nan"), cramers_v=float("nan"),
                   total_variation=float("nan") if len(cats) >= 2 else 0.0,
                   note="too few values or a single category")
        return out
    table = np.array([[a.count(c) for c in cats], [b.count(c) for c in cats]], dtype=float)
    chi2, p, _, _ = stats.chi2_contingency(table)
    freq = table / table.sum(axis=1, keepdims=True)
    out.update(chi2=float(chi2), chi2_pvalue=float(p),
               cramers_v=float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))),
               total_variation=float(0.5 * np.abs(freq[0] - freq[1]).sum()),
               frequencies_a=dict(zip(cats, freq[0].round(4).tolist())),
               frequencies_b=dict(zip(cats, freq[1].round(4).tolist())))
    return out


def shortcut_auc(X, y, *, groups=None, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated ROC AUC of a deliberately trivial classifier that sees only ``X``.

    One descriptor: logistic regression on a cubic spline basis of the descriptor's quantiles,
    a smooth, low-variance fit that captures monotone and non-monotone patterns (negatives both
    denser and lighter than positives, say); rows without a value are left out. Several
    descriptors: a shallow gradient-boosted tree ensemble (missing values handled natively; rows
    with no value at all are left out). Neither sees structure. Out-of-fold probabilities of all
    folds are pooled into one AUC.

    Args:
        X: one descriptor (1-D) or several (one column each).
        y: binary labels.
        groups: with groups (e.g. formulas), folds never split a group, so a polymorph's sibling cannot
            leak its label.
        folds: the number of folds, capped at the size of the smaller class.
        seed: shuffling seed of the folds and random state of the trees.

    Returns:
        A dict with ``auc``, ``n``, ``folds`` and, on success, ``grouped`` and ``model``; ``auc`` is NaN
        (with a ``note``) when a class has fewer than 2 rows or the folds left a class out.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X = np.asarray(X, dtype=float)
    X = X.reshape(len(X), -1)
    y = np.asarray(y).astype(int)
    single = X.shape[1] == 1
    keep = np.isfinite(X).all(axis=1) if single else np.isfinite(X).any(axis=1)
    X, y = X[keep], y[keep]
    groups = None if groups is None else np.asarray(groups)[keep]
    counts = np.bincount(y, minlength=2)
    k = int(min(folds, counts.min())) if len(counts) == 2 else 0
    if k < 2:
        return {"auc": float("nan"), "n": int(len(y)), "folds": 0, "note": "need at least 2 of each class"}
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(X, y, groups)
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y)
    oof = np.full(len(y), np.nan)
    for train, test in splits:
        if len(np.unique(y[train])) < 2:
            continue
        clf = _one_descriptor_model(len(train)) if single else HistGradientBoostingClassifier(
            max_depth=3, max_iter=100, learning_rate=0.1, min_samples_leaf=10, random_state=seed)
        clf.fit(X[train], y[train])
        oof[test] = clf.predict_proba(X[test])[:, 1]
    done = np.isfinite(oof)
    if len(np.unique(y[done])) < 2:
        return {"auc": float("nan"), "n": int(len(y)), "folds": k, "note": "folds left a class out"}
    return {"auc": float(roc_auc_score(y[done], oof[done])), "n": int(done.sum()), "folds": k,
            "grouped": groups is not None, "model": "spline-logistic" if single else "gradient-boosted trees"}


def _one_descriptor_model(n_train: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import QuantileTransformer, SplineTransformer

    return make_pipeline(QuantileTransformer(n_quantiles=min(200, n_train)),
                         SplineTransformer(n_knots=6, degree=3), LogisticRegression(C=1.0, max_iter=1000))
