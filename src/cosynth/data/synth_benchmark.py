"""The synthesizability benchmark's data: every labelled Materials Project structure offline, one split.

Rows come from ``mp_synth_structures`` and ``mp_extra_structures`` (an MP id in both is kept once,
from the first). Each row's label is taken from the first list that has its MP id: CPUL (2022,
close to MP v2022.10.28), then PU-CGCNN, then SynCoTrain; ``label_source`` says which. ``origin``
names the file a structure came from: origins differ a lot in their positive rate, so every
metric is also reported within origin.

The split is frozen by its seed: grouped by reduced formula (no formula in two splits, so the
polymorphs of a formula and any near-duplicate structures stay together) and stratified by
origin × label, 60/20/20. Composition-only rows (PU-CGCNN lists) may join the training split
only, and never with a formula of the validation or test split.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd

from cosynth.config import data_root
from cosynth.data.loaders import mp_structures_labelled
from cosynth.io.files import read_table

__all__ = ["benchmark_table", "composition_rows", "leakage_checks", "split_fingerprint"]

PUCGCNN_LISTS = {"mp_synth_labels/pucgcnn_MP_icsd_CLscore.csv.gz": 1,
                 "mp_synth_labels/pucgcnn_MP_virtual_CLscore.csv.gz": 0}
KEPT = ["id", "formula", "cif", "origin", "folder", "label", "label_source", "e_above_hull", "clscore_pucgcnn"]


def benchmark_table(root=None, *, seed: int = 0) -> pd.DataFrame:
    """Every labelled MP structure of the shared data with its origin, label and frozen split.

    Args:
        root: the shared data root (default: :func:`cosynth.config.data_root`).
        seed: the split's seed.

    Returns:
        One row per MP id: ``id``, ``formula``, ``cif``, ``origin``, ``folder``, ``label`` (1 =
        ICSD-tagged), ``label_source`` (cpul, pucgcnn or syncotrain), ``e_above_hull``,
        ``clscore_pucgcnn`` (where known) and ``split`` (train/val/test).
    """
    frame = mp_structures_labelled(root).rename(columns={"material_id": "id", "reduced_formula": "formula"})
    frame = frame[KEPT].sort_values("id").reset_index(drop=True)
    frame["split"] = grouped_split(frame, seed=seed)
    return frame


def grouped_split(frame: pd.DataFrame, *, seed: int = 0) -> np.ndarray:
    """train/val/test (60/20/20) grouped by ``formula``, stratified by ``origin`` × ``label``."""
    from sklearn.model_selection import StratifiedGroupKFold

    strata = (frame["origin"].astype(str) + "|" + frame["label"].astype(str)).to_numpy()
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    names = np.full(len(frame), "train", dtype=object)
    for k, (_, held) in enumerate(folds.split(np.zeros(len(frame)), strata, groups=frame["formula"].to_numpy())):
        if k == 0:
            names[held] = "test"
        elif k == 1:
            names[held] = "val"
    return names


def composition_rows(root=None, *, exclude_formulas=()) -> pd.DataFrame:
    """Labelled MP compositions without structures (PU-CGCNN lists), for the training split only.

    Args:
        root: the shared data root.
        exclude_formulas: reduced formulas that must not appear (those of the validation and
            test splits, and those that already have structures).

    Returns:
        Rows ``id``, ``formula``, ``label``, ``origin`` (``pucgcnn_compositions``), ``label_source``,
        ``split`` (train); a formula listed with both labels keeps its majority label (ties: 1).
    """
    from pymatgen.core import Composition

    root = data_root(root)
    parts = [read_table(root / name, dtype={"composition": str}).assign(label=label)
             for name, label in PUCGCNN_LISTS.items()]
    frame = pd.concat(parts, ignore_index=True)
    with warnings.catch_warnings():  # electronegativity notes for noble gases, nothing to act on
        warnings.simplefilter("ignore")
        reduced = {c: Composition(c).reduced_formula for c in frame["composition"].unique()}
    frame["formula"] = frame["composition"].map(reduced)
    frame = frame[~frame["formula"].isin(set(exclude_formulas))]
    by_formula = frame.groupby("formula")["label"].mean()
    out = pd.DataFrame({"formula": by_formula.index, "label": (by_formula.to_numpy() >= 0.5).astype(int)})
    out.insert(0, "id", "composition:" + out["formula"])
    return out.assign(origin="pucgcnn_compositions", label_source="pucgcnn", split="train")


def leakage_checks(frame: pd.DataFrame) -> dict:
    """What could leak between the splits, counted: ids or formulas in two splits.

    Near-duplicate structures share their reduced formula, so with formulas confined to one split
    none can cross; the count of formulas in two splits is therefore the near-duplicate check too.
    """
    ids = frame.groupby("id")["split"].nunique()
    formulas = frame.groupby("formula")["split"].nunique()
    return {"rows": int(len(frame)), "ids_in_two_splits": int((ids > 1).sum()),
            "formulas_in_two_splits": int((formulas > 1).sum()),
            "duplicate_ids": int(frame["id"].duplicated().sum())}


def split_fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of (id, split) pairs: two runs with the same fingerprint used the same split."""
    text = "\n".join(f"{i},{s}" for i, s in sorted(zip(frame["id"].astype(str), frame["split"])))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
