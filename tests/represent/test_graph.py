import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.represent.graph import MAX_NEIGHBOURS, RADIUS, GraphBatch, GraphCache, crystal_graph


def rocksalt(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_twelve_nearest_neighbours_within_cutoff_sorted():
    g = crystal_graph(rocksalt())
    assert g.n_sites == 8
    counts = np.bincount(g.centre, minlength=g.n_sites)
    assert (counts == MAX_NEIGHBOURS).all()
    assert g.distance.max() <= RADIUS
    for i in range(g.n_sites):
        d = g.distance[g.centre == i]
        assert (np.diff(d) >= -1e-6).all()
        assert d[:6] == pytest.approx([5.64 / 2] * 6, abs=1e-4)  # six Cl at a/2 come first


def test_descriptors_of_the_primitive_cell():
    g = crystal_graph(rocksalt())
    a, b, c, al, be, ga, system, number = g.descriptors
    assert a == pytest.approx(5.64 / np.sqrt(2), abs=1e-3)  # primitive fcc cell
    assert al == pytest.approx(60.0, abs=1e-3)
    assert (system, number) == (7, 225)
    assert g.volume_per_atom == pytest.approx(5.64 ** 3 / 8)


def test_disordered_sites_keep_their_occupancies():
    s = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    g = crystal_graph(s)
    assert sorted(g.species_z.tolist()) == [26, 28]
    assert g.species_occ.tolist() == [0.5, 0.5]


def test_cache_reuses_graphs_from_disk(tmp_path):
    cif = rocksalt().to(fmt="cif")
    first = GraphCache(tmp_path)
    g1 = first.get(cif)
    assert first.built == 1 and list(tmp_path.rglob("*.npz"))
    again = GraphCache(tmp_path)  # a new process would see the same files
    g2 = again.get(cif)
    assert again.built == 0
    np.testing.assert_array_equal(g1.distance, g2.distance)
    np.testing.assert_array_equal(g1.descriptors, g2.descriptors)


def test_bad_cifs_are_reported_per_position(tmp_path):
    cache = GraphCache(tmp_path)
    graphs, errors = cache.get_many([rocksalt().to(fmt="cif"), "data_broken\n_cell_length_a 1\n"])
    assert graphs[0] is not None and graphs[1] is None
    assert list(errors) == [1] and "CIF" in errors[1]


def test_batch_offsets_keep_graphs_apart():
    g = crystal_graph(rocksalt())
    b = GraphBatch.collate([g, g])
    assert b.n_sites == 16 and b.n == 2
    assert (b.site_crystal[b.centre] == b.site_crystal[b.neighbour]).all()
