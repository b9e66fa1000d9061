"""Loaders of the shared datasets and of CGCNN-style CIF folders."""

from __future__ import annotations

import pytest

from cosynth.data.loaders import load, load_cgcnn, load_shared


@pytest.fixture(scope="module")
def data_root(shared_path):
    return shared_path("data/mp_synth_structures").parent


def test_mp_synth_structures_labels_and_sodium_nitride(data_root):
    table = load_shared("mp_synth_structures", data_root, parse=False)
    frame = table.frame
    assert len(frame) == 11021 and frame["id"].is_unique
    assert frame["label"].value_counts().to_dict() == {1: 7638, 0: 2952}  # union as in SOURCE.md
    assert "NaN" in set(frame["formula"])  # sodium nitride, not a missing value
    assert set(frame["source"]) == {"mp_synth_structures"} and "structure_source" in frame


def test_cosnet_band_gap_has_splits_and_structures_where_available(data_root):
    table = load_shared("cosnet_splits", data_root, parse=False)
    frame = table.frame
    assert len(frame) == 5900 and frame["split"].value_counts().to_dict() == {"train": 3545, "test": 1188, "val": 1167}
    # MP ids covered by mp_synth_structures (519 + 173 + 178 rows) and mp_extra_structures (167 + 49 + 54)
    assert int(table.has_structure().sum()) == 1140
    assert frame.loc[~table.has_structure(), "formula"].notna().all()  # composition-only rows are kept


def test_tarball_cifs_and_unknown_names(data_root):
    xiespp = load_shared("hypothetical_structures", data_root, subset="xiespp")
    assert len(xiespp) == 13 and xiespp.has_structure().all()
    assert set(xiespp.frame["formula"]) == {"SiC", "GaN", "MoS2"}
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_shared("nope", data_root)
    with pytest.raises(ValueError, match="subsets"):
        load_shared("hypothetical_structures", data_root, subset="nope")


def test_cgcnn_folder_with_missing_and_broken_cifs(tmp_path, crystals):
    (tmp_path / "a.cif").write_text(crystals.rocksalt("Na", "Cl", 5.64).to(fmt="cif"))
    (tmp_path / "b.cif").write_text("data_b\n_cell_length_a 3\n")
    (tmp_path / "d.cif").write_text(crystals.rocksalt("Mg", "O", 4.21).to(fmt="cif"))
    (tmp_path / "id_prop.csv").write_text("a,1.5\nb,2.0\nc,3.0\nd,0.25\n")
    table = load_cgcnn(tmp_path)
    assert table.frame["id"].tolist() == ["a", "d"] and table.frame["target"].tolist() == [1.5, 0.25]
    assert table.frame["formula"].tolist() == ["NaCl", "MgO"]
    errors = dict(zip(table.errors["row"], table.errors["error"]))
    assert set(errors) == {1, 2}
    assert "incomplete cell: the CIF has no _cell_length_b" in errors[1] and "file not found" in errors[2]
    assert load(str(tmp_path)).frame["id"].tolist() == ["a", "d"]  # a folder dispatches to the CGCNN loader
