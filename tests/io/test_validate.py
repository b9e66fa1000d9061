"""validate_structure: each check rejects what it should, with a message a user can act on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.io.validate import MAX_EXTENT, MIN_DISTANCE, CrystalValidationError, validate_structure


def rocksalt(a: float = 5.64) -> Structure:
    """Conventional rock-salt cell, built by hand (space-group lookups are slow)."""
    fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    cl = [[x + 0.5 - (x >= 0.5), y, z] for x, y, z in fcc]
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, fcc + cl)


def reject(structure: Structure, **kw) -> str:
    with pytest.raises(CrystalValidationError) as info:
        validate_structure(structure, **kw)
    return str(info.value)


def naive_min_distance(structure: Structure) -> float:
    """The shortcut this module must NOT take: images only in neighbour cells -1..1."""
    best = np.inf
    m = structure.lattice.matrix
    for shift in itertools.product((-1, 0, 1), repeat=3):
        t = np.array(shift) @ m
        for i, a in enumerate(structure.cart_coords):
            for j, b in enumerate(structure.cart_coords):
                if i == j and shift == (0, 0, 0):
                    continue
                best = min(best, float(np.linalg.norm(b + t - a)))
    return best


def test_constants_and_error_type():
    assert MIN_DISTANCE == 0.6766 and MAX_EXTENT == 50.0
    assert issubclass(CrystalValidationError, ValueError)


def test_good_structure_passes_unchanged():
    s = rocksalt()
    assert validate_structure(s) is s
    assert len(s) == 8


def test_no_atoms():
    assert reject(Structure(Lattice.cubic(4), [], [])) == "no atoms"


@pytest.mark.parametrize("symbol", ["X", "Xx"])
def test_dummy_species_is_unknown_element(symbol):
    s = Structure(Lattice.cubic(4), [symbol, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    message = reject(s)
    assert "unknown element" in message and symbol in message and "site 0" in message


def test_disorder_names_site_and_species():
    s = Structure(Lattice.cubic(2.86), ["Al", {"Fe": 0.5, "Co": 0.5}], [[0, 0, 0], [0.5, 0.5, 0.5]])
    message = reject(s)
    assert "site 1 (Fe0.5 Co0.5) is disordered" in message
    assert "resolve_disorder='majority'" in message


def test_partial_occupancy_of_one_species_is_disorder():
    s = Structure(Lattice.cubic(3), [{"Li": 0.5}], [[0, 0, 0]])
    assert "disordered" in reject(s)


def test_majority_resolves_each_disordered_site():
    s = Structure(
        Lattice.cubic(4),
        [{"Fe": 0.3, "Co": 0.7}, {"Ni": 0.5, "Cu": 0.5}, {"Li": 0.4}, "O"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    out = validate_structure(s, resolve_disorder="majority")
    assert out.is_ordered
    assert [site.specie.symbol for site in out] == ["Co", "Ni", "Li", "O"]  # tie -> first listed
    assert all(site.species.num_atoms == 1 for site in out)
    assert not s.is_ordered  # the input is not modified


def test_rounding_in_occupancy_is_not_disorder():
    s = Structure(Lattice.cubic(3), [{"Cu": 0.9999}], [[0, 0, 0]])
    out = validate_structure(s)
    assert out.is_ordered and out[0].species.num_atoms == 1


def test_bad_resolve_mode_is_usage_error():
    with pytest.raises(ValueError, match="resolve_disorder"):
        validate_structure(rocksalt(), resolve_disorder="minority")


def test_close_pair_names_sites_and_distance():
    s = Structure(Lattice.cubic(4), ["H", "O", "H"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.1, 0, 0]])
    assert reject(s) == "atoms 0 and 2 are 0.40 Å apart (< 0.6766 Å minimum)"


def test_close_pair_across_the_cell_boundary():
    s = Structure(Lattice.cubic(4), ["H", "H"], [[0.02, 0.5, 0.5], [0.96, 0.5, 0.5]])
    assert "atoms 0 and 1 are 0.24 Å apart" in reject(s)


def test_coincident_atoms_are_rejected():
    s = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0]])
    assert "atoms 0 and 1 are 0.00 Å apart" in reject(s)


def test_one_atom_cell_with_short_vector_hits_own_image():
    s = Structure(Lattice.orthorhombic(0.5, 4, 4), ["Li"], [[0, 0, 0]])
    assert reject(s) == "atom 0 and its own periodic image are 0.50 Å apart (< 0.6766 Å minimum)"


def test_very_oblique_cell_needs_a_real_neighbour_search():
    # b - 30 a = (0.3, 0.4, 0): a 0.5 Å period that no -1..1 combination of a, b, c shows.
    s = Structure(Lattice([[3, 0, 0], [90.3, 0.4, 0], [0, 0, 3]]), ["Li"], [[0, 0, 0]])
    assert naive_min_distance(s) > 2.9  # the shortcut would accept this crystal
    assert "own periodic image are 0.50 Å apart" in reject(s)


@pytest.mark.parametrize("period, bad", [(0.6, True), (0.7, False)])
def test_distance_check_does_not_depend_on_the_choice_of_basis(period, bad):
    # Same lattice points as diag(3, 3, period), written in a badly skewed basis.
    reduced = np.diag([3.0, 3.0, period])
    unimodular = np.array([[1, -4, -8], [-7, 8, -5], [1, -3, -5]])
    assert round(abs(np.linalg.det(unimodular))) == 1
    s = Structure(Lattice(unimodular @ reduced), ["C"], [[0, 0, 0]])
    assert naive_min_distance(s) > 0.7
    if bad:
        assert f"{period:.2f} Å apart" in reject(s)
    else:
        validate_structure(s)


def test_extent_names_axis():
    s = Structure(Lattice.orthorhombic(4, 4, 60), ["C", "C"], [[0, 0, 0.01], [0, 0, 0.99]])
    assert reject(s) == "atoms span 58.8 Å along z (> 50 Å image box)"


def test_limits_are_parameters():
    s = Structure(Lattice.cubic(4), ["H", "H"], [[0, 0, 0], [0.2, 0, 0]])  # 0.8 Å apart, 0.8 Å extent
    validate_structure(s)
    assert "apart" in reject(s, min_distance=1.0)
    assert "along x" in reject(s, max_extent=0.5)


def test_checks_run_in_documented_order():
    # unknown element and a close pair: the element is reported first
    s = Structure(Lattice.cubic(4), ["X", "H"], [[0, 0, 0], [0.05, 0, 0]])
    assert "unknown element" in reject(s)
    # disorder and a close pair: disorder first
    s = Structure(Lattice.cubic(4), [{"Fe": 0.5}, "H"], [[0, 0, 0], [0.05, 0, 0]])
    assert "disordered" in reject(s)
    # a close pair in a too-long cell: the extent first (cheap checks run before the neighbour search)
    s = Structure(Lattice.orthorhombic(4, 4, 60), ["H", "H", "H"], [[0, 0, 0], [0.05, 0, 0], [0, 0, 0.99]])
    assert "atoms span" in reject(s)


# ----------------------------------------------------------------------------- hostile input: cheap checks first


@pytest.mark.parametrize("lattice, words", [
    (Lattice.cubic(1e30), "cell length a = 1e+30 Å is beyond the 1000 Å limit"),
    (Lattice.orthorhombic(4, 4, 1e30), "cell length c = 1e+30 Å is beyond the 1000 Å limit"),
    (Lattice.cubic(1e-30), "degenerate cell (volume 1e-90 Å³)"),
    (Lattice.orthorhombic(1e-3, 400, 400), "atom 0 and its own periodic image are 0.00 Å apart"),
    (Lattice([[np.nan, 0, 0], [0, 4, 0], [0, 0, 4]]), "non-finite lattice"),
])
def test_absurd_cells_are_rejected_before_any_neighbour_search(lattice, words, monkeypatch):
    monkeypatch.setattr(Structure, "get_neighbor_list", lambda *a, **k: pytest.fail("neighbour search ran"))
    assert words in reject(Structure(lattice, ["Na"], [[0, 0, 0]]))


def test_non_finite_coordinates_and_too_many_atoms():
    s = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.replace(1, "Cl", [np.inf, 0.5, 0.5])
    assert reject(s) == "non-finite coordinates at site 1 (NaN or infinite)"
    many = Structure(Lattice.cubic(40), ["C"] * 11, np.random.default_rng(0).random((11, 3)))
    assert reject(many, max_atoms=10) == "too many atoms: 11 in the cell (limit 10)"


def test_more_atoms_than_the_volume_holds_is_a_close_pair_without_searching(monkeypatch):
    monkeypatch.setattr(Structure, "get_neighbor_list", lambda *a, **k: pytest.fail("no search needed"))
    s = Structure(Lattice.cubic(2), ["H"] * 40, np.random.default_rng(1).random((40, 3)))
    assert reject(s) == ("40 atoms in a 8 Å³ cell (0.2 Å³ per atom): some atoms must be closer than the "
                         "0.6766 Å minimum distance")


def test_tiling_budget_and_oblique_cells_are_reduced():
    from cosynth.io.validate import check_tiling_budget, tiling_cost
    from cosynth.represent.voxel import CrystalImager, standard_frame

    good = rocksalt()
    cell, pos = standard_frame(good.lattice.matrix, good.cart_coords)
    total, slab = tiling_cost(cell, pos)
    imager = CrystalImager.from_structure(good)
    assert imager.n_points <= total < 100 * imager.n_points  # the estimate bounds the tiling, and not loosely
    assert slab < total
    # the same 3 × 0.9 × 3 Å lattice in a skewed basis: 1e9 translations as written
    skewed = Structure(Lattice([[3, 0, 0], [990, 0.9, 0], [0, 0, 3]]), ["Li"], [[0, 0, 0]])
    cell, pos = standard_frame(skewed.lattice.matrix, skewed.cart_coords)
    assert tiling_cost(cell, pos)[0] > 1e8
    with pytest.raises(CrystalValidationError, match="voxel tiling too large"):
        check_tiling_budget(cell, pos)
    with pytest.raises(CrystalValidationError, match="voxel tiling too large"):
        CrystalImager.from_structure(skewed)  # the imager guards itself, validated or not
    reduced = validate_structure(skewed)
    assert sorted(np.round(reduced.lattice.abc, 6)) == [0.9, 3.0, 3.0]
    assert CrystalImager.from_structure(reduced).n_points > 0
    with pytest.raises(CrystalValidationError, match="voxel tiling too large"):
        check_tiling_budget(*standard_frame(good.lattice.matrix, good.cart_coords), memory_budget=1000)


def test_many_coincident_atoms_are_found_without_a_quadratic_neighbour_list(monkeypatch):
    import resource

    monkeypatch.setattr(Structure, "get_neighbor_list", lambda *a, **k: pytest.fail("neighbour search ran"))
    frac = np.tile([[0.1, 0.2, 0.3]], (60_000, 1))  # 3.6e9 pairs for a neighbour list
    s = Structure(Lattice.cubic(45), ["C"] * len(frac), frac)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert reject(s) == "atoms 0 and 1 are 0.00 Å apart (< 0.6766 Å minimum)"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300_000  # KiB
