"""Fixtures of the data tests: small crystals built with pymatgen (no files needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pymatgen.core import Lattice, Structure


def rocksalt(a: str, b: str, lattice: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def zincblende(a: str, b: str, lattice: float) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.25, 0.25, 0.25]])


def cscl(a: str, b: str, lattice: float) -> Structure:
    return Structure(Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def wurtzite(a: str, b: str, lattice: float, c: float) -> Structure:
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(lattice, c), [a, b],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]])


def nias(a: str, b: str, lattice: float, c: float) -> Structure:
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(lattice, c), [a, b],
                                     [[0, 0, 0], [1 / 3, 2 / 3, 0.25]])


@pytest.fixture(scope="session")
def crystals() -> SimpleNamespace:
    """Builders of simple crystals: crystals.rocksalt("Na", "Cl", 5.64), …"""
    return SimpleNamespace(rocksalt=rocksalt, zincblende=zincblende, cscl=cscl, wurtzite=wurtzite, nias=nias)


@pytest.fixture(scope="session")
def ab_pool() -> list[tuple[str, Structure]]:
    """AB prototypes of five structure types (three rock salts), ids like a database's (do not mutate)."""
    return [
        ("p-nacl", rocksalt("Na", "Cl", 5.64)),
        ("p-kbr", rocksalt("K", "Br", 6.60)),
        ("p-zns", zincblende("Zn", "S", 5.41)),
        ("p-cscl", cscl("Cs", "Cl", 4.12)),
        ("p-gan", wurtzite("Ga", "N", 3.19, 5.19)),
        ("p-nias", nias("Ni", "As", 3.62, 5.03)),
        ("p-mgo", rocksalt("Mg", "O", 4.21)),
    ]
