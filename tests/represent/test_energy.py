"""CHGNet energies and the energy above a reference hull: made-up crystals sit high above it."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.represent import energy
from cosynth.represent.energy import Hull, above_hull, structure_energies

GOLD_FCC = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Au"], [[0, 0, 0]])
GOLD_DIAMOND = Structure.from_spacegroup("Fd-3m", Lattice.cubic(6.0), ["Au"], [[0, 0, 0]])
ROCK_SALT = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def squeezed(structure, factor=0.7):
    out = structure.copy()
    out.scale_lattice(structure.volume * factor)
    return out


def test_made_up_crystals_lie_far_above_the_real_ones(tmp_path):
    e = structure_energies([GOLD_FCC, GOLD_DIAMOND, ROCK_SALT, squeezed(ROCK_SALT)], cache_folder=tmp_path)
    assert e["energy_error"].isna().all()
    gold, diamond, salt, squashed = e["energy_per_atom"]
    assert diamond - gold > 0.3  # eV/atom: gold is not a diamond-structure metal
    assert squashed - salt > 0.3
    hull = Hull.of(["Au", "NaCl"], [gold, salt], {"Na": -1.3, "Cl": -1.8})
    above = above_hull(["Au", "Au", "NaCl", "NaCl"], [GOLD_FCC, GOLD_DIAMOND, ROCK_SALT, squeezed(ROCK_SALT)], hull,
                       cache_folder=tmp_path)
    assert above[0] == pytest.approx(0, abs=1e-9) and above[2] == pytest.approx(0, abs=1e-9)
    assert above[1] == pytest.approx(diamond - gold) and above[3] == pytest.approx(squashed - salt)


def test_energies_do_not_depend_on_their_neighbours_or_the_cache(tmp_path, monkeypatch):
    structures = [GOLD_FCC, ROCK_SALT, squeezed(ROCK_SALT, 0.9), GOLD_DIAMOND]
    together = structure_energies(structures, use_cache=False)["energy_per_atom"].to_numpy()
    alone = [structure_energies([s], use_cache=False)["energy_per_atom"].iloc[0] for s in structures[::-1]][::-1]
    np.testing.assert_array_equal(together, alone)  # exactly: a shard or a batch changes nothing
    alone = structure_energies(structures, cache_folder=tmp_path)["energy_per_atom"].to_numpy()
    monkeypatch.setattr(energy, "_energies", lambda *a, **k: pytest.fail("the cache was not read"))
    cached = structure_energies(structures, cache_folder=tmp_path)["energy_per_atom"].to_numpy()
    np.testing.assert_array_equal(cached, alone)


def test_a_broken_structure_gets_a_message_and_the_rest_go_on(tmp_path):
    lone = Structure(Lattice.cubic(30.0), ["Si"], [[0, 0, 0]])  # no neighbour within CHGNet's reach
    e = structure_energies([ROCK_SALT, lone, None, GOLD_FCC], cache_folder=tmp_path)
    assert np.isfinite(e["energy_per_atom"].iloc[[0, 3]]).all()
    assert np.isnan(e["energy_per_atom"].iloc[2]) and e["energy_error"].iloc[2] is None
    assert np.isnan(e["energy_per_atom"].iloc[1]) and "isolated" in e["energy_error"].iloc[1]
    crushed = squeezed(ROCK_SALT, 0.01)  # 1.9 atoms per Å^3: its graph would hold ~1,000 neighbours per atom
    big = ROCK_SALT * (8, 8, 8)  # 4,096 atoms
    e = structure_energies([crushed, GOLD_FCC, big], cache_folder=tmp_path)
    assert "denser than any crystal" in e["energy_error"].iloc[0] and "4096 atoms" in e["energy_error"].iloc[2]
    assert e["energy_error"].iloc[1] is None and np.isfinite(e["energy_per_atom"].iloc[1])


def test_the_hull_of_a_binary_system():
    # A and B at 0, AB at -1 eV/atom: A3B lies on the A-AB tie line at -0.5
    hull = Hull({"Na": 0.0, "Cl": 0.0, "NaCl": -1.0})
    above = hull.above(["Na3Cl", "NaCl", "NaCl", "KCl", None, "Xx2O"], [-0.5, -1.2, -0.9, -1.0, -1.0, -1.0])
    np.testing.assert_allclose(above[:3], [0.0, -0.2, 0.1], atol=1e-9)
    assert np.isnan(above[3:]).all()  # no reference for K; no formula; not a formula
    assert hull.missing_elements(["KCl", "NaCl"]) == ["K"]
    kept = Hull.of(["NaCl", "NaCl", "Na", "Cl"], [-1.0, -0.8, 0.0, np.nan], {"Cl": 0.0})
    assert kept.lowest == {"Cl2": 0.0, "Na": 0.0, "NaCl": -1.0}  # as pymatgen reduces chlorine
