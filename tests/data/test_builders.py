"""The bias-study builders on the real shared data (small formula subsets to stay fast)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cosynth.data.builders import build_mixed_source, build_single_source
from cosynth.data.table import normalize_formula, read_table

pytestmark = pytest.mark.slow
FORMULAS = ["SiO2", "TiO2", "ZnS", "GaN", "SiC", "CdS"]


@pytest.fixture(scope="module")
def data_root(shared_path):
    return shared_path("data/mp_synth_structures").parent


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("COSYNTH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def test_single_source_table_and_card(data_root, tmp_path, cache_env):
    out = tmp_path / "single.parquet"
    table = build_single_source(data_root, out, formulas=FORMULAS, seed=0)
    frame = read_table(out).frame
    assert list(frame.columns[:6]) == ["id", "formula", "cif", "label", "source", "split"]
    assert (frame.groupby("formula")["label"].nunique() == 2).all()  # both polymorph classes per formula
    assert set(frame["split"]) == {"train", "val", "test"} and set(frame["source"]) == {"materials_project"}
    card = json.loads((tmp_path / "single.card.json").read_text())
    assert card["seed"] == 0 and card["counts"]["rows"] == len(table)
    assert 0.5 <= card["confounds"]["source_only_auc"] <= 1.0  # origin confound reported, not hidden
    assert set(card["descriptors"]) == {"all", "0", "1"} and card["descriptors"]["1"]["density"]["n"] > 0
    assert "structure_source × label" in (tmp_path / "single.card.md").read_text()
    again = build_single_source(data_root, None, formulas=FORMULAS, seed=0)
    pd.testing.assert_frame_equal(table.frame, again.frame)


def test_single_source_uses_both_folders_cpul_first_and_the_literature_variant(data_root, cache_env):
    from cosynth.data.builders import literature_compositions

    top = literature_compositions(data_root, 30)
    assert len(top) == len(set(top)) and top[0] == normalize_formula(top[0])
    table = build_single_source(data_root, None, literature_top=30, seed=0)
    frame = table.frame
    assert set(frame["formula"]) <= set(top) and (frame.groupby("formula")["label"].nunique() == 2).all()
    assert frame["label_source"].iloc[0] in {"cpul", "pucgcnn", "syncotrain"}
    assert (frame["label_source"] == "cpul").mean() > 0.5  # the 2022 list labels most rows
    assert {"mp_synth_structures", "mp_extra_structures"} == set(frame["folder"])


def test_single_source_balanced_within_each_origin(data_root, cache_env):
    table = build_single_source(data_root, None, formulas=FORMULAS, balance=True, stratify_source=True, seed=1)
    per_source = table.frame.groupby(["structure_source", "label"]).size().unstack()
    assert (per_source[0] == per_source[1]).all()


def test_mixed_source_negatives_are_denser_under_covalent_scaling_only(data_root, tmp_path, cache_env):
    out = tmp_path / "mixed.parquet"
    table = build_mixed_source(data_root, out, n_formulas=8, max_prototypes=6, ratio=5.0, seed=0)
    frame = table.frame
    n_pos, n_neg = (frame["label"] == 1).sum(), (frame["label"] == 0).sum()
    assert n_neg == round(n_pos / 5.0)
    assert set(frame.loc[frame["label"] == 0, "formula"]) <= set(frame.loc[frame["label"] == 1, "formula"])
    assert set(frame.loc[frame["label"] == 0, "source"]) == {"generated"}
    gen = frame[frame["label"] == 0]
    assert gen["prototype_id"].notna().all() and (gen["prototype_formula"] != gen["formula"]).all()
    card = json.loads((tmp_path / "mixed.card.json").read_text())
    dc = card["density_comparison"]
    assert dc["covalent (this table)"]["median_ratio"] > 1.3
    assert dc["reference (same negatives rescaled)"]["median_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "mixed.card.md").exists() and (tmp_path / "mixed.errors.csv").exists()
    again = build_mixed_source(data_root, None, n_formulas=8, max_prototypes=6, ratio=5.0, seed=0)
    pd.testing.assert_frame_equal(frame, again.frame)
