"""Splits (stratified, grouped, seeded) and the cross-split leakage check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cosynth.data.splits import assign_splits, check_leakage, split, stratified_split
from cosynth.data.table import CrystalTable


def test_stratified_split_is_shared_with_the_trainer_and_unchanged():
    from cosynth.training.voxel import stratified_split as trainer_split

    assert trainer_split is stratified_split
    y = np.array([0] * 30 + [1] * 70)
    parts = stratified_split(y, (60, 20, 20), 0)
    # frozen indices: the bundled model's split depends on them
    assert parts["test"][:8].tolist() == [3, 4, 9, 15, 19, 25, 30, 49]  # from the pre-move implementation
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    assert [len(parts[k]) for k in ("train", "val", "test")] == [60, 20, 20]
    assert [int(y[parts[k]].sum()) for k in ("train", "val", "test")] == [42, 14, 14]


def test_assign_splits_random_is_seeded():
    y = np.array([0, 1] * 50)
    a, b = assign_splits(y, seed=3), assign_splits(y, seed=3)
    assert (a == b).all() and not (a == assign_splits(y, seed=4)).all()
    assert pd.Series(a).value_counts().to_dict() == {"train": 60, "val": 20, "test": 20}


def test_grouped_split_keeps_each_formula_in_one_split():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"F{i}" for i in range(60)], rng.integers(1, 6, 60))
    y = rng.integers(0, 2, len(groups))
    s = assign_splits(y, groups=groups, seed=1)
    per_group = pd.DataFrame({"g": groups, "s": s}).groupby("g")["s"].nunique()
    assert (per_group == 1).all()
    share = pd.Series(s).value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.6, abs=0.08) and share["test"] == pytest.approx(0.2, abs=0.08)
    assert (s == assign_splits(y, groups=groups, seed=1)).all()


def _table(crystals, rows):
    structures = [r[1] for r in rows]
    return CrystalTable.from_structures(structures, ids=[r[0] for r in rows], split=[r[2] for r in rows])


def test_leakage_finds_copies_and_relaxed_twins_across_splits(crystals):
    nacl = crystals.rocksalt("Na", "Cl", 5.64)
    expanded = crystals.rocksalt("Na", "Cl", 5.80)  # same crystal, another relaxation (+8.7 % volume)
    cscl_type = crystals.cscl("Na", "Cl", 3.3)  # another polymorph of the same formula
    table = _table(crystals, [("a", nacl, "train"), ("b", nacl.copy(), "test"), ("c", expanded, "val"),
                              ("d", cscl_type, "test"), ("e", crystals.rocksalt("Mg", "O", 4.2), "test")])
    report = check_leakage(table)
    pairs = {(r.id_a, r.id_b): r.kind for r in report.pairs.itertuples()}
    assert pairs == {("a", "b"): "identical", ("a", "c"): "near-identical", ("b", "c"): "near-identical"}
    assert report.summary["pairs_identical"] == 1 and report.summary["rows_involved"] == 3
    assert report.summary["formula_overlap"]["test_formulas_in_train"] == "1/2"
    assert not report.ok


def test_no_leakage_within_one_split(crystals):
    nacl = crystals.rocksalt("Na", "Cl", 5.64)
    table = _table(crystals, [("a", nacl, "train"), ("b", nacl.copy(), "train"), ("d", crystals.cscl("Na", "Cl", 3.3), "test")])
    report = check_leakage(table)
    assert report.ok and report.summary["pairs_near_identical"] == 0


def test_split_adds_a_column_and_checks_its_inputs(crystals):
    table = CrystalTable.from_frame(pd.DataFrame({"id": [str(i) for i in range(20)], "formula": ["NaCl", "MgO"] * 10,
                                                  "label": [0, 1] * 10}))
    out = split(table, seed=0, group_by="formula")
    assert out.frame.groupby("formula")["split"].nunique().max() == 1
    assert "split" not in table.frame.columns  # the input is not modified
    with pytest.raises(ValueError, match="label column 'y'"):
        split(table, label="y")
    with pytest.raises(ValueError, match="no split column"):
        check_leakage(table)
