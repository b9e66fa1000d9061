"""CrystalTable: formats, per-row validation, composition-only rows, caching."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cosynth.data.table import CrystalTable, read_table


@pytest.fixture
def nacl_cif(crystals) -> str:
    return crystals.rocksalt("Na", "Cl", 5.64).to(fmt="cif")


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".csv.gz", ".jsonl"])
def test_round_trip_keeps_sodium_nitride_and_composition_only_rows(tmp_path, nacl_cif, ext):
    df = pd.DataFrame({"material_id": ["mp-1", "mp-2", "003"], "reduced_formula": ["NaN", "NaCl", "Fe2O3"],
                       "cif": [None, nacl_cif, None], "band_gap": [0.5, 5.0, np.nan]})
    table = CrystalTable.from_frame(df)
    path = tmp_path / f"t{ext}"
    table.write(path)
    back = read_table(path)
    assert back.frame["id"].tolist() == ["mp-1", "mp-2", "003"]  # "003" stays a string id
    assert back.frame["formula"].tolist() == ["NaN", "NaCl", "Fe2O3"]
    assert back.has_structure().tolist() == [False, True, False]
    assert back.structures()[1].composition.reduced_formula == "NaCl"
    assert back.structures()[0] is None
    assert back.frame["band_gap"].iloc[1] == 5.0 and pd.isna(back.frame["band_gap"].iloc[2])
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temp file
    assert len(back.errors) == 0


def test_csv_read_keeps_nan_formula_string(tmp_path):
    (tmp_path / "t.csv").write_text("id,formula,target\n1,NaN,3.0\n2,,4.0\n3,GaAs,\n")
    table = read_table(tmp_path / "t.csv")
    assert table.frame["formula"].tolist() == ["NaN", "GaAs"]
    assert table.errors[["row", "id"]].values.tolist() == [[1, "2"]]
    assert "no formula" in table.errors["error"].iloc[0]


def test_bad_rows_go_to_errors_with_specific_messages(nacl_cif):
    df = pd.DataFrame({
        "id": ["ok", "badformula", "xy", "brokencif", "qq", "ok"],
        "formula": ["NaN", "Fe2O3)", "Xy2", None, None, "NaCl"],
        "cif": [None, None, None, "data_x\n_cell_length_a 3.0\n", nacl_cif.replace("Na", "Qq"), None],
    })
    table = CrystalTable.from_frame(df)
    assert table.frame["id"].tolist() == ["ok"]
    errors = dict(zip(table.errors["row"], table.errors["error"]))
    assert set(errors) == {1, 2, 3, 4, 5}
    assert "unparsable formula 'Fe2O3)'" in errors[1]
    assert "unknown element Xy" in errors[2]
    assert "incomplete cell: the CIF has no _cell_length_b" in errors[3]
    assert "Qq" in errors[4]
    assert "duplicate id 'ok'" in errors[5]


def test_formula_from_structure_when_missing_and_structures_cached(nacl_cif):
    table = CrystalTable.from_frame(pd.DataFrame({"structure": [nacl_cif]}))
    assert table.frame["formula"].tolist() == ["NaCl"] and table.frame["id"].tolist() == ["0"]
    first, second = table.structures(), table.structures()
    assert first[0] is second[0]
    lazy = CrystalTable.from_frame(pd.DataFrame({"id": ["a"], "cif": [nacl_cif]}), parse=False)
    assert lazy.frame["formula"].tolist() == ["NaCl"]


def test_in_memory_structures_become_cif_text(crystals):
    s = crystals.rocksalt("Mg", "O", 4.21)
    table = CrystalTable.from_structures([s], ids=["mgo"], label=[1])
    assert table.frame["cif"].iloc[0].lstrip().startswith("# generated using pymatgen")
    assert table.frame["formula"].tolist() == ["MgO"] and table.frame["label"].tolist() == [1]


def test_missing_columns_and_unknown_format_are_usage_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a formula column"):
        CrystalTable.from_frame(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="no id column 'nope'"):
        CrystalTable.from_frame(pd.DataFrame({"formula": ["NaCl"]}), id_column="nope")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported table format"):
        read_table(tmp_path / "t.txt")


def test_jsonl_numeric_ids_and_targets(tmp_path):
    rows = [{"task_id": 7, "pretty_formula": "NaN", "y": 1.5}, {"task_id": 8, "pretty_formula": "Si", "y": None}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table = read_table(tmp_path / "t.jsonl")
    assert table.frame["id"].tolist() == ["7", "8"]
    assert table.frame["formula"].tolist() == ["NaN", "Si"]
