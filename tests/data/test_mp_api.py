"""Materials Project loader: clear install hint without mp-api; document → table conversion."""

from __future__ import annotations

import builtins
from types import SimpleNamespace

import pytest

from cosynth.data.mp_api import docs_to_table, load_materials_project


def test_missing_mp_api_gives_the_install_hint(monkeypatch):
    real_import = builtins.__import__

    def no_mp_api(name, *args, **kw):
        if name == "mp_api" or name.startswith("mp_api."):
            raise ImportError("No module named 'mp_api'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mp_api)
    with pytest.raises(ImportError, match=r"pip install cosynth\[public\]"):
        load_materials_project(formulas=["SiO2"])


def test_summary_docs_become_labelled_rows(crystals):
    docs = [
        SimpleNamespace(material_id="mp-22862", formula_pretty="NaCl", structure=crystals.rocksalt("Na", "Cl", 5.64),
                        theoretical=False, database_IDs={"icsd": ["icsd-240598", "icsd-18189"]},
                        energy_above_hull=0.0, formation_energy_per_atom=-2.1, band_gap=5.0),
        {"material_id": "mp-1120767", "formula_pretty": "NaCl", "structure": crystals.cscl("Na", "Cl", 3.3),
         "theoretical": True, "database_IDs": {}, "energy_above_hull": 0.03},
        {"material_id": "mp-bad", "formula_pretty": "NaCl", "structure": "not a structure", "theoretical": True},
    ]
    table = docs_to_table(docs)
    frame = table.frame
    assert frame["id"].tolist() == ["mp-22862", "mp-1120767"]
    assert frame["label"].tolist() == [1, 0]  # ICSD-tagged = positive, theoretical = negative
    assert frame["icsd_ids"].iloc[0] == "icsd-240598,icsd-18189" and frame["source"].iloc[0] == "materials_project"
    assert [s.composition.reduced_formula for s in table.structures()] == ["NaCl", "NaCl"]
    assert table.errors["id"].tolist() == ["mp-bad"]
