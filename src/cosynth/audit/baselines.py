"""Reference scores that need no voxel model: how much of a label is visible without one.

Beside every voxel model the reports put scores a shortcut or a shallow model reaches on the same
test rows: energy above hull, PU-CGCNN's CLscore, density alone, the positive rate of the row's
origin (the file-of-origin shortcut), and gradient-boosted trees on the audit's simple structure
descriptors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE_SCORES = {
    "clscore_pucgcnn": ("PU-CGCNN crystal-likeness score (a graph model trained on ~120k MP crystals, these "
                        "labels' positives among them, so an optimistic reference)", 1),
    "e_above_hull": ("energy above the convex hull (DFT; lower = more stable)", -1),
    "density_g_cm3": ("density alone (the mixed-source shortcut)", 1),
}


def label_signal(table: Path, *, label: str = "label", cache_dir: Path | None = None) -> list[dict]:
    """ROC AUC of each reference score (signed so that higher = more synthesizable) on the test rows that have it,
    then of the origin alone (:func:`origin_baseline`) and of a shallow model on simple structure descriptors
    (:func:`descriptor_baseline`).

    A reference score is skipped when its column is absent, fewer than 10 test rows have it, or those rows hold
    a single class.

    Args:
        table: path of a table with a ``split`` column; test rows are those with ``split == "test"``.
        label: the label column.
        cache_dir: descriptor cache folder for the baseline, or None.

    Returns:
        One dict per score (``score``, ``meaning``, ``test_rows``, ``roc_auc`` rounded to 3 digits).
    """
    from sklearn.metrics import roc_auc_score

    from cosynth.data.table import read_table

    crystals = read_table(table)
    frame = crystals.frame[crystals.frame["split"] == "test"]
    rows = []
    for column, (meaning, sign) in REFERENCE_SCORES.items():
        if column not in frame:
            continue
        score = pd.to_numeric(frame[column], errors="coerce")
        known = score.notna().to_numpy()
        labels = frame[label].to_numpy()[known]
        if known.sum() < 10 or len(set(labels)) < 2:
            continue
        rows.append({"score": column, "meaning": meaning, "test_rows": int(known.sum()),
                     "roc_auc": round(float(roc_auc_score(labels, sign * score.to_numpy()[known])), 3)})
    if (baseline := origin_baseline(crystals.frame, label=label)) is not None:
        rows.append(baseline)
    if (baseline := descriptor_baseline(crystals, label=label, cache_dir=cache_dir)) is not None:
        rows.append(baseline)
    return rows


def origin_scores(frame: pd.DataFrame, *, origin: str = "origin", label: str = "label") -> np.ndarray:
    """Each row's score is the positive rate of its origin among the training rows (the overall
    training rate for an origin the training rows lack): all a model learns from the origin alone."""
    train = frame[frame["split"] == "train"]
    rate = train.groupby(origin)[label].mean()
    return frame[origin].map(rate).fillna(train[label].mean()).to_numpy(float)


def origin_baseline(frame: pd.DataFrame, *, origin: str = "structure_source", label: str = "label") -> dict | None:
    """Test-split AUC of :func:`origin_scores`: a table that mixes files of origin with different
    positive rates gives the label away without any structure; a model must beat this.

    Returns:
        A dict like those of :func:`label_signal` (``score`` is :data:`ORIGIN_BASELINE`), or None when the
        table has no such column, a single origin, or a test split with one class.
    """
    from sklearn.metrics import roc_auc_score

    if origin not in frame or frame[origin].nunique() < 2:
        return None
    test = (frame["split"] == "test").to_numpy()
    y = frame[label].to_numpy()
    if len(set(y[test])) < 2 or frame.loc[frame["split"] == "train", label].nunique() < 2:
        return None
    scores = origin_scores(frame, origin=origin, label=label)
    return {"score": ORIGIN_BASELINE,
            "meaning": (f"positive rate of the row's {origin} ({frame[origin].nunique()} origins) in the train split: "
                        "the file-of-origin shortcut"),
            "test_rows": int(test.sum()),
            "roc_auc": round(float(roc_auc_score(y[test], scores[test])), 3)}


def descriptor_scores(crystals, *, label: str = "label", cache_dir: Path | None = None, seed: int = 0,
                      progress: bool = False, described: pd.DataFrame | None = None
                      ) -> tuple[np.ndarray, list[str]] | None:
    """Scores of gradient-boosted trees fitted on the train split's simple structure descriptors.

    The descriptors are the audit's (density, packing, sites, symmetry, …) and their ratio to the
    formula's median; they say what a structure reveals about the label without any learned
    representation.

    Args:
        crystals: a CrystalTable with ``split`` and label columns.
        label: the label column.
        cache_dir: descriptor cache folder, or None.
        seed: random state of the trees.
        progress: a progress bar while descriptors are computed.
        described: the table's descriptors when the caller already has them (:func:`describe_table`).

    Returns:
        (probability of the positive class for every row, descriptor names), or None without
        structures or when the train split lacks a class.
    """
    from cosynth.audit.audit import DEFAULT_STRUCTURE, add_formula_relative, describe_table
    from cosynth.represent.descriptors import CATEGORICAL

    if not crystals.has_structure().any():
        return None
    frame = crystals.frame.reset_index(drop=True).copy()
    names = [d for d in DEFAULT_STRUCTURE if d not in CATEGORICAL]
    if described is None:
        described = describe_table(crystals, cache_dir=cache_dir, progress=progress)
    for name in names:
        frame[name] = described[name].to_numpy()
    names += add_formula_relative(frame)
    X, y = frame[names].to_numpy(dtype=float), frame[label].to_numpy()
    train = (frame["split"] == "train").to_numpy()
    if len(set(y[train])) < 2:
        return None
    return descriptor_trees(X[train], y[train], seed).predict_proba(X)[:, 1], names


def descriptor_trees(X: np.ndarray, y: np.ndarray, seed: int = 0):
    """The gradient-boosted trees every descriptor baseline fits: shallow and few, so that they show
    what coarse features carry rather than what a tuned model could squeeze out."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_depth=3, max_iter=100, learning_rate=0.1, min_samples_leaf=10,
                                          random_state=seed).fit(X, y)


def descriptor_baseline(crystals, *, label: str = "label", cache_dir: Path | None = None,
                        seed: int = 0) -> dict | None:
    """Test-split AUC of :func:`descriptor_scores`: a voxel CNN that does no better has not found
    more than these coarse features.

    Args:
        crystals: a CrystalTable with ``split`` and label columns.
        label: the label column.
        cache_dir: descriptor cache folder, or None.
        seed: random state of the trees.

    Returns:
        A dict like those of :func:`label_signal` (``score`` is :data:`STRUCTURE_BASELINE`), or None
        without structures or when the train or test split lacks a class.
    """
    from sklearn.metrics import roc_auc_score

    fitted = descriptor_scores(crystals, label=label, cache_dir=cache_dir, seed=seed)
    if fitted is None:
        return None
    scores, names = fitted
    frame = crystals.frame.reset_index(drop=True)
    y, test = frame[label].to_numpy(), (frame["split"] == "test").to_numpy()
    if len(set(y[test])) < 2:
        return None
    return {"score": STRUCTURE_BASELINE,
            "meaning": (f"gradient-boosted trees on {len(names)} simple structure descriptors ({', '.join(names)}), "
                        "fitted on the train split: what structure reveals without a learned representation"),
            "test_rows": int(test.sum()),
            "roc_auc": round(float(roc_auc_score(y[test], scores[test])), 3)}


STRUCTURE_BASELINE = "structure_descriptors"
ORIGIN_BASELINE = "origin_only"
# rows of label_signal that are shortcuts or shallow models a voxel model has to beat (the others are
# references: physics, or a model trained on far more crystals)
BASELINES_TO_BEAT = (ORIGIN_BASELINE, STRUCTURE_BASELINE)


