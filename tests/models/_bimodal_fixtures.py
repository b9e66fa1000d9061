"""Tiny in-memory crystals and rows shared by the Roost/CGCNN/COSNet tests."""

import functools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.models.bimodal_data import BimodalRows
from cosynth.represent.composition import composition_graph
from cosynth.represent.graph import crystal_graph

FORMULAS = ["NaCl", "KBr", "MgO", "LiF", "CaO", "NaCl"]


def rocksalt(a, b, lat):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


@functools.lru_cache(maxsize=None)
def rocksalt_graph(a, b, lat):
    """Graphs are immutable in use; building them (symmetry analysis) is the slow part."""
    return crystal_graph(rocksalt(a, b, lat))


SPECS = [("Na", "Cl", 5.64), ("K", "Br", 6.6), ("Mg", "O", 4.21), ("Li", "F", 4.03), ("Ca", "O", 4.81),
         ("Na", "Cl", 5.70)]


def rows(present=(1, 1, 0, 1, 0, 1)):
    """Six rows; NaCl twice (two polymorph-like cells), structures where ``present`` is 1."""
    graphs = [rocksalt_graph(*spec) if p else None for spec, p in zip(SPECS, present)]
    has = np.array([g is not None for g in graphs])
    return BimodalRows([f"r{i}" for i in range(6)], list(FORMULAS), [composition_graph(f) for f in FORMULAS],
                       graphs, np.arange(1, 7, dtype=np.float32), has, has.copy())


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a loaded 2-core machine two threads thrash."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
