"""Descriptors against values computed by hand."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.represent import descriptors as D
from cosynth.represent.descriptors import compute_descriptors, min_distance

AMU_A3_TO_G_CM3 = 1.66053906660


def rocksalt(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_rocksalt_values():
    s = rocksalt()
    d = compute_descriptors(["NaCl"], [s], use_cache=False).iloc[0]
    mass = 4 * (22.98976928 + 35.453)
    assert d["density"] == pytest.approx(mass / 5.64 ** 3 * AMU_A3_TO_G_CM3, rel=1e-4)
    assert d["mean_atomic_mass"] == pytest.approx((22.98976928 + 35.453) / 2, rel=1e-6)
    assert d["volume_per_atom"] == pytest.approx(5.64 ** 3 / 8)
    assert d["n_sites"] == 8 and d["n_elements"] == 2
    assert d["min_distance"] == pytest.approx(5.64 / 2)
    assert d["spacegroup_number"] == 225 and d["crystal_system"] == "cubic"
    from ase.data import covalent_radii
    spheres = 4 * 4 / 3 * np.pi * (covalent_radii[11] ** 3 + covalent_radii[17] ** 3)
    assert d["packing_fraction"] == pytest.approx(spheres / 5.64 ** 3)
    assert d["descriptor_error"] is None
    assert d["coordination_mean"] == 6 and d["coordination_spread"] == 0 and d["unlike_contact_fraction"] == 1
    assert d["bond_ratio_min"] == pytest.approx(2.82 / (covalent_radii[11] + covalent_radii[17]))
    assert d["distinct_sites"] == 2


def test_neighbour_shells_tell_made_up_gold_from_real_gold():
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Au"], [[0, 0, 0]])
    diamond = Structure.from_spacegroup("Fd-3m", Lattice.cubic(6.12), ["Au"], [[0, 0, 0]])
    d = compute_descriptors([None, None], [fcc, diamond], use_cache=False)
    assert d["coordination_mean"].tolist() == [12, 4]
    assert d["unlike_contact_fraction"].tolist() == [0, 0]
    assert d.loc[1, "bond_ratio_mean"] < d.loc[0, "bond_ratio_mean"]


def test_cell_choice_does_not_change_the_neighbour_shells_or_the_site_count():
    s = rocksalt()
    views = [s, s.get_primitive_structure(), s * (2, 1, 1)]
    d = compute_descriptors([None] * 3, views, use_cache=False)
    for name in ("bond_ratio_min", "bond_ratio_mean", "coordination_mean", "unlike_contact_fraction", "distinct_sites"):
        assert d[name].to_numpy() == pytest.approx([d.loc[0, name]] * 3), name


def test_a_mixed_cell_keeps_its_shells_when_one_atom_sits_far_from_the_rest():
    # two close atoms and one 30 Å away: the lone atom's shell lies beyond the search, the others' do not
    s = Structure(Lattice.cubic(60.0), ["Cu", "Cu", "Cu"], [[0, 0, 0], [0.04, 0, 0], [0.5, 0.5, 0.5]])
    d = compute_descriptors([None], [s], use_cache=False).iloc[0]
    assert d["min_distance"] == pytest.approx(2.4)
    assert d["coordination_mean"] == 1 and d["descriptor_error"] is None


def test_min_distance_periodic_and_oblique():
    assert min_distance(Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])) == pytest.approx(3.0)
    # a very oblique cell: the nearest image is along a - b, not along an axis
    lat = Lattice([[10, 0, 0], [9.5, 1.0, 0], [0, 0, 10]])
    s = Structure(lat, ["Cu"], [[0, 0, 0]])
    assert min_distance(s) == pytest.approx(np.hypot(0.5, 1.0))
    big = Structure(Lattice.cubic(20.0), ["Cu"], [[0, 0, 0]])  # no neighbour within the first radius
    assert min_distance(big) == pytest.approx(20.0)


def test_composition_only_rows_and_bad_rows_do_not_stop_the_batch():
    d = compute_descriptors(["NaN", "Xx2", None, "Fe2O3"], [None, None, None, None])
    assert d.loc[0, "mean_atomic_mass"] == pytest.approx((22.98976928 + 14.007) / 2, rel=1e-4)  # Na3N
    assert np.isnan(d.loc[0, "density"])
    assert "unknown element Xx" in d.loc[1, "descriptor_error"]
    assert d.loc[2, "descriptor_error"] == "no formula and no structure"
    assert d.loc[3, "n_elements"] == 2 and d.loc[3, "descriptor_error"] is None
    assert d.loc[3, "electronegativity_range"] == pytest.approx(3.44 - 1.83)


def test_formula_comes_from_the_structure_and_scaling_changes_density_only():
    s = rocksalt()
    small = s.copy()
    small.scale_lattice(s.volume * 0.5)
    d = compute_descriptors([None, None], [s, small], use_cache=False)
    assert d.loc[1, "density"] == pytest.approx(2 * d.loc[0, "density"])
    assert d.loc[1, "mean_atomic_mass"] == d.loc[0, "mean_atomic_mass"]
    assert d.loc[1, "spacegroup_number"] == d.loc[0, "spacegroup_number"]


def test_disk_cache_reuses_results(tmp_path, monkeypatch):
    s = rocksalt()
    first = compute_descriptors(["NaCl"], [s], cache_dir=tmp_path)
    calls = []
    monkeypatch.setattr(D, "structure_descriptors", lambda *a, **k: calls.append(1) or {})
    second = compute_descriptors(["NaCl"], [s], cache_dir=tmp_path)
    assert calls == [] and second.equals(first)
    other = rocksalt(5.0)
    compute_descriptors(["NaCl"], [other], cache_dir=tmp_path)
    assert calls == [1]  # a different structure is computed
