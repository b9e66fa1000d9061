"""Train/validation/test splits and a leakage check across them.

Random stratified 60/20/20 is the papers' protocol; grouping by formula keeps all polymorphs of
a composition in one split, which is the honest choice when a model could otherwise learn the
composition from a sibling polymorph. ``check_leakage`` finds what a split leaks anyway: the
same (or a nearly identical) crystal in two splits, e.g. one material relaxed by two databases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["SPLIT_NAMES", "LeakageReport", "assign_splits", "check_leakage", "split", "stratified_split"]

SPLIT_NAMES = ("train", "val", "test")


def stratified_split(labels: np.ndarray, fractions, seed: int) -> dict[str, np.ndarray]:
    """Indices for train/val/test, stratified by label, fixed by the seed.

    Args:
        labels: label per row.
        fractions: train, val and test proportions (normalised to sum 1).
        seed: random state of the split.

    Returns:
        {"train", "val", "test"} → sorted row indices.
    """
    from sklearn.model_selection import train_test_split

    fr = np.asarray(fractions, dtype=float)
    fr = fr / fr.sum()
    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, train_size=fr[0], stratify=labels, random_state=seed)
    val_share = fr[1] / (fr[1] + fr[2])
    val, test = train_test_split(rest, train_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _grouped_split(labels: np.ndarray, groups: np.ndarray, fractions, seed: int) -> np.ndarray:
    """Split name per row with every group in one split, label shares kept close to the targets.

    Groups are visited in a seeded random order, largest first among ties of size, and each
    goes to the split that is furthest below its target for that group's labels.
    """
    fr = np.asarray(fractions, dtype=float)
    fr = fr / fr.sum()
    classes, y = np.unique(labels, return_inverse=True)
    uniq, g = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(uniq), len(classes)))
    np.add.at(counts, (g, y), 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    target = fr[:, None] * counts.sum(0)[None, :]
    filled = np.zeros_like(target)
    where = np.empty(len(uniq), dtype=np.int64)
    for k in order:
        deficit = ((target - filled) * counts[k][None, :]).sum(1) / max(counts[k].sum(), 1)
        s = int(np.argmax(deficit))
        where[k] = s
        filled[s] += counts[k]
    return np.asarray(SPLIT_NAMES, dtype=object)[where[g]]


def assign_splits(labels, *, fractions=(60, 20, 20), seed: int = 0, groups=None) -> np.ndarray:
    """Split name ("train"/"val"/"test") per row.

    Without ``groups``: random split stratified by label (:func:`stratified_split`, so a table
    split here and the voxel trainer agree). With ``groups`` (e.g. formulas): no group is
    shared between splits, label shares kept close to the targets.

    Args:
        labels: label per row.
        fractions: three positive train, val and test proportions.
        seed: random state of the split.
        groups: group per row, or None.

    Returns:
        An object array of split names, one per row.

    Raises:
        ValueError: ``fractions`` is not three positive numbers.
    """
    labels = np.asarray(labels)
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be three positive numbers, got {fractions!r}")
    if groups is not None:
        return _grouped_split(labels, np.asarray(groups, dtype=object), fractions, seed)
    parts = stratified_split(labels, fractions, seed)
    out = np.empty(len(labels), dtype=object)
    for name, idx in parts.items():
        out[idx] = name
    return out


def split(table, *, label: str | None = "label", fractions=(60, 20, 20), seed: int = 0,
          group_by: str | None = None, column: str = "split"):
    """A copy of a CrystalTable with a split column (see :func:`assign_splits`).

    Args:
        table: the CrystalTable.
        label: the column to stratify by; None for an unstratified split.
        fractions, seed: train/val/test proportions; random state.
        group_by: a column whose values never span two splits (e.g. ``formula``), or None.
        column: the name of the new column.

    Returns:
        The new CrystalTable.

    Raises:
        ValueError: the label or group column is not in the table.
    """
    frame = table.frame.copy()
    if label is not None and label not in frame.columns:
        raise ValueError(f"label column {label!r} not in the table (columns: {', '.join(frame.columns)})")
    if group_by is not None and group_by not in frame.columns:
        raise ValueError(f"group column {group_by!r} not in the table")
    labels = frame[label].to_numpy() if label else np.zeros(len(frame), dtype=int)
    groups = frame[group_by].to_numpy() if group_by else None
    frame[column] = assign_splits(labels, fractions=fractions, seed=seed, groups=groups)
    return table.with_frame(frame)


# ---- leakage -----------------------------------------------------------------------------------
@dataclass
class LeakageReport:
    """Crystals shared between splits: ``pairs`` (one row per leaking pair) and a summary."""

    pairs: pd.DataFrame
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return len(self.pairs) == 0


IDENTICAL = dict(ltol=0.01, stol=0.01, angle_tol=0.5, scale=False)
NEAR = dict(ltol=0.2, stol=0.3, angle_tol=5.0, scale=True)


def check_leakage(table, *, split_column: str = "split", near: bool = True,
                  near_tolerances: dict | None = None) -> LeakageReport:
    """Pairs of rows in different splits whose structures match (pymatgen StructureMatcher).

    "identical": same cell and sites within 1 % (same crystal, possibly a copy);
    "near-identical": matches at pymatgen's default tolerances with volume scaling (same
    structure type and arrangement, e.g. the same material from two relaxations). Only rows of
    the same formula can match. Composition overlap between splits is summarised too.

    Args:
        table: a CrystalTable with a split column.
        split_column: the split column.
        near: also look for near-identical pairs.
        near_tolerances: StructureMatcher options for near-identical (default :data:`NEAR`).

    Returns:
        A :class:`LeakageReport`.

    Raises:
        ValueError: no split column.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    frame = table.frame
    if split_column not in frame.columns:
        raise ValueError(f"no split column {split_column!r} in the table; run split first")
    exact = StructureMatcher(**IDENTICAL, primitive_cell=True)
    loose = StructureMatcher(**(near_tolerances or NEAR), primitive_cell=True)
    structures = table.structures()
    splits = frame[split_column].astype(str).to_numpy()
    rows = []
    for formula, idx in frame.groupby("formula", sort=True).indices.items():
        idx = [i for i in idx if structures[i] is not None]
        for a_pos, a in enumerate(idx):
            for b in idx[a_pos + 1:]:
                if splits[a] == splits[b]:
                    continue
                sa, sb = structures[a], structures[b]
                if exact.fit(sa, sb):
                    kind = "identical"
                elif near and loose.fit(sa, sb):
                    kind = "near-identical"
                else:
                    continue
                rows.append({"id_a": frame["id"].iat[a], "split_a": splits[a], "id_b": frame["id"].iat[b],
                             "split_b": splits[b], "formula": formula, "kind": kind,
                             "volume_ratio": sb.volume / sa.volume * len(sa) / len(sb)})
    pairs = pd.DataFrame(rows, columns=["id_a", "split_a", "id_b", "split_b", "formula", "kind", "volume_ratio"])
    summary = {
        "rows": int(len(frame)),
        "pairs_identical": int((pairs["kind"] == "identical").sum()),
        "pairs_near_identical": int((pairs["kind"] == "near-identical").sum()),
        "rows_involved": int(len(set(pairs["id_a"]) | set(pairs["id_b"]))),
        "formula_overlap": _formula_overlap(frame, splits),
    }
    return LeakageReport(pairs, summary)


def _formula_overlap(frame: pd.DataFrame, splits: np.ndarray) -> dict:
    """Share of val/test formulas that also occur in train (composition leakage)."""
    train = set(frame["formula"][splits == "train"])
    out = {}
    for name in ("val", "test"):
        fs = set(frame["formula"][splits == name])
        out[f"{name}_formulas_in_train"] = f"{len(fs & train)}/{len(fs)}"
    return out
