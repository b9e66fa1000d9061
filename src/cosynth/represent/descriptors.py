"""Cheap physical descriptors of crystals and compositions.

They are what a model should *not* be able to classify on: if density or mean atomic mass alone
separates synthesizable from unsynthesizable crystals, a deep model trained on that data may
have learned the shortcut (bias-study spec). The audit compares their class/source
distributions; data cards summarise them.

Structure descriptors are NaN for composition-only rows; composition descriptors exist for
every row. Results are cached on disk per crystal (keyed by a hash of the structure's
lattice, coordinates and species), so auditing the same table twice costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from ase.data import covalent_radii
from pymatgen.core import Composition, Element, Structure

from cosynth.config import cache_dir

DESCRIPTOR_VERSION = 2

SHELL = 1.2  # an atom's neighbours: within this factor of its nearest neighbour's distance
STRUCTURE_DESCRIPTORS = {
    "density": "mass density, g/cm³ (total atomic mass / cell volume)",
    "volume_per_atom": "cell volume per atom, Å³",
    "packing_fraction": "volume of covalent-radius spheres / cell volume",
    "n_sites": "atoms in the cell",
    "min_distance": "shortest interatomic distance over all periodic images, Å",
    "bond_ratio_min": "shortest interatomic distance over the two atoms' covalent-radius sum",
    "bond_ratio_mean": "mean over atoms of the nearest neighbour's distance over their covalent-radius sum",
    "coordination_mean": f"mean over atoms of the neighbours within {SHELL:g}× the atom's nearest distance",
    "coordination_spread": "standard deviation over atoms of that coordination number",
    "unlike_contact_fraction": "share of those neighbour contacts that join two different elements",
    "distinct_sites": "symmetry-distinct sites, i.e. occupied Wyckoff orbits (spglib, symprec 0.1)",
    "spacegroup_number": "international space-group number (spglib, symprec 0.1)",
    "crystal_system": "crystal system (spglib, symprec 0.1)",
}
COMPOSITION_DESCRIPTORS = {
    "mean_atomic_mass": "mean atomic mass per atom, amu",
    "n_elements": "number of distinct elements",
    "mean_electronegativity": "fraction-weighted Pauling electronegativity",
    "electronegativity_range": "max − min Pauling electronegativity",
    "mean_covalent_radius": "fraction-weighted covalent radius, Å",
    "max_atomic_number": "heaviest element's Z",
}
DESCRIPTORS = {**COMPOSITION_DESCRIPTORS, **STRUCTURE_DESCRIPTORS}
# How atoms are surrounded and how many sites symmetry makes distinct: what the audit's structure
# descriptors leave out (the audit looks for shortcuts; these describe the crystal itself).
LOCAL_STRUCTURE = ("bond_ratio_min", "bond_ratio_mean", "coordination_mean", "coordination_spread",
                   "unlike_contact_fraction", "distinct_sites")
# Descriptors that are categories, not magnitudes (the audit treats them differently).
CATEGORICAL = ("crystal_system",)
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def default_cache_dir() -> Path:
    """$COSYNTH_CACHE/descriptors, else the user cache folder (never the repository)."""
    return cache_dir("descriptors")


def composition_descriptors(formula: str | Composition) -> dict[str, float]:
    """Descriptors that need no structure; raises ValueError for an unparsable formula."""
    comp = formula if isinstance(formula, Composition) else Composition(formula)
    if comp.num_atoms <= 0:
        raise ValueError(f"empty composition {formula!r}")
    fractions = comp.fractional_composition
    elements = [getattr(e, "element", e) for e in fractions]  # species (Fe2+) → element
    unknown = [getattr(e, "symbol", str(e)) for e in elements if not isinstance(e, Element)]
    if unknown:
        raise ValueError(f"unknown element {', '.join(unknown)}")
    weights = np.array(list(fractions.values()), dtype=float)
    chi = np.array([e.X if e.X == e.X else np.nan for e in elements], dtype=float)
    radii = np.array([covalent_radii[e.Z] for e in elements], dtype=float)
    known = np.isfinite(chi)
    return {
        "mean_atomic_mass": float(comp.weight) / float(comp.num_atoms),
        "n_elements": float(len(elements)),
        "mean_electronegativity": float(np.sum(weights[known] * chi[known]) / np.sum(weights[known]))
        if known.any() else np.nan,
        "electronegativity_range": float(np.ptp(chi[known])) if known.any() else np.nan,
        "mean_covalent_radius": float(np.sum(weights * radii)),
        "max_atomic_number": float(max(e.Z for e in elements)),
    }


def element_fractions(formulas: Sequence[str | None], elements: Sequence[str]) -> np.ndarray:
    """Each formula's atomic fraction of every element of ``elements`` (rows, elements); an element
    outside the list counts for nothing, and an unreadable or missing formula is a row of NaN."""
    column = {symbol: k for k, symbol in enumerate(elements)}
    out = np.zeros((len(formulas), len(elements)))
    for row, formula in enumerate(formulas):
        try:
            fractions = Composition(formula).fractional_composition
        except Exception:  # noqa: BLE001 - that row is unknown, not the batch's failure
            out[row] = np.nan
            continue
        for species, share in fractions.items():
            k = column.get(getattr(getattr(species, "element", species), "symbol", str(species)))
            if k is not None:
                out[row, k] += share
    return out


def structure_descriptors(structure: Structure, symprec: float = 0.1) -> dict[str, object]:
    """Descriptors of one ordered crystal structure."""
    volume = float(structure.volume)
    n = len(structure)
    numbers = np.array([site.specie.Z for site in structure], dtype=int)
    sphere_volume = float(np.sum(4.0 / 3.0 * np.pi * covalent_radii[numbers] ** 3))
    out: dict[str, object] = {
        "density": float(structure.density),
        "volume_per_atom": volume / n,
        "packing_fraction": sphere_volume / volume,
        "n_sites": float(n),
        **neighbour_shells(structure),
        "spacegroup_number": np.nan,
        "crystal_system": None,
        "distinct_sites": np.nan,
    }
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # spglib's error-handling notice
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            out["spacegroup_number"] = float(sga.get_space_group_number())
            out["crystal_system"] = sga.get_crystal_system()
            out["distinct_sites"] = float(len(set(sga.get_symmetry_dataset().equivalent_atoms)))
    except Exception:  # spglib gives up on some cells; the other descriptors still stand
        pass
    return out


SHELL_RADIUS = 5.0  # Å: the first neighbour search, doubled while some atom's shell reaches beyond it
SHELL_RADIUS_MAX = 64.0


def neighbour_shells(structure: Structure) -> dict[str, float]:
    """How each atom is surrounded (periodic): the shortest distance, bond lengths relative to the
    covalent radii, coordination within :data:`SHELL` of the nearest distance, and how many of those
    contacts join unlike elements. A strained or made-up crystal shows itself here (gold four-fold
    coordinated, atoms pressed far inside their radii) where density alone may look ordinary.

    Atoms whose shell is not complete within a wide search (a lone atom in a mostly empty cell) count
    only towards the shortest distance; NaN where no atom has a neighbour at all."""
    n = len(structure)
    numbers = np.array([site.specie.Z for site in structure], dtype=int)
    r = SHELL_RADIUS
    while True:
        centers, points, offsets, distances = structure.get_neighbor_list(r=r, exclude_self=False)
        other = ~((centers == points) & np.all(offsets == 0, axis=1))
        centers, points, distances = centers[other], points[other], distances[other]
        nearest = np.full(n, np.inf)
        np.minimum.at(nearest, centers, distances)
        complete = SHELL * nearest <= r
        if complete.all() or r >= SHELL_RADIUS_MAX or (complete.any() and r >= 4 * SHELL_RADIUS):
            break
        r *= 2
    nan = dict.fromkeys(("bond_ratio_min", "bond_ratio_mean", "coordination_mean", "coordination_spread",
                         "unlike_contact_fraction"), np.nan)
    if not np.isfinite(nearest).any():
        return {"min_distance": np.nan, **nan}
    ratio = distances / (covalent_radii[numbers[centers]] + covalent_radii[numbers[points]])
    out = {"min_distance": float(nearest.min()), **nan, "bond_ratio_min": float(ratio.min())}
    if complete.any():
        nearest_ratio = np.full(n, np.inf)
        np.minimum.at(nearest_ratio, centers, ratio)
        shell = complete[centers] & (distances <= SHELL * nearest[centers])
        coordination = np.bincount(centers[shell], minlength=n)[complete]
        out.update(bond_ratio_mean=float(nearest_ratio[complete].mean()),
                   coordination_mean=float(coordination.mean()), coordination_spread=float(coordination.std()),
                   unlike_contact_fraction=float(np.mean(numbers[centers[shell]] != numbers[points[shell]])))
    return out


def min_distance(structure: Structure) -> float:
    """Shortest distance between two atoms (or an atom and its own image), periodic."""
    return neighbour_shells(structure)["min_distance"]


def structure_key(structure: Structure) -> str:
    """Stable hash of what the descriptors depend on."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(structure.frac_coords, dtype=np.float64).tobytes())
    h.update(np.array([s.specie.Z for s in structure], dtype=np.int32).tobytes())
    h.update(f"v{DESCRIPTOR_VERSION}".encode())
    return h.hexdigest()


def compute_descriptors(
    formulas: Sequence[str | None],
    structures: Sequence[Structure | None] | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    symprec: float = 0.1,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per input: every descriptor of `DESCRIPTORS`, plus `descriptor_error`.

    A row needs a formula or a structure; the composition comes from the structure when there is one.
    Structure descriptors are NaN where there is no structure. A row that fails gets NaN and a
    message in `descriptor_error`; the other rows are unaffected.

    Args:
        formulas: formula per row (None where unknown).
        structures: structure per row (None where missing), aligned with ``formulas``; None for none at all.
        cache_dir: folder of the on-disk structure-descriptor cache (default: the package cache folder).
        use_cache: read and write that cache.
        symprec: symmetry tolerance of the space-group analysis.
        progress: a progress bar on stderr.

    Returns:
        A DataFrame, one row per input; numeric descriptors as floats, ``crystal_system`` and
        ``descriptor_error`` as text or None.

    Raises:
        ValueError: ``formulas`` and ``structures`` differ in length.
    """
    n = len(formulas)
    structures = list(structures) if structures is not None else [None] * n
    if len(structures) != n:
        raise ValueError(f"{n} formulas but {len(structures)} structures")
    cache = _Cache(cache_dir, symprec) if use_cache else None
    rows = []
    pairs = zip(formulas, structures)
    if progress:
        import sys

        from tqdm import tqdm

        pairs = tqdm(pairs, total=n, desc="descriptors", unit="crystal", file=sys.stderr)
    for formula, structure in pairs:
        row: dict[str, object] = {name: np.nan for name in DESCRIPTORS}
        row["crystal_system"] = None
        errors = []
        comp_source = structure.composition if structure is not None else formula
        if comp_source is None or (isinstance(comp_source, float) and comp_source != comp_source):
            errors.append("no formula and no structure")
        else:
            try:
                row.update(composition_descriptors(comp_source))
            except Exception as exc:
                errors.append(f"formula {formula!r}: {exc}")
        if structure is not None:
            try:
                row.update(cache.get(structure) if cache else structure_descriptors(structure, symprec))
            except Exception as exc:
                errors.append(f"structure: {exc}")
        row["descriptor_error"] = "; ".join(errors) or None
        rows.append(row)
    if cache:
        cache.save()
    frame = pd.DataFrame(rows, columns=[*DESCRIPTORS, "descriptor_error"])
    numeric = [c for c in DESCRIPTORS if c not in CATEGORICAL]
    frame[numeric] = frame[numeric].astype(float)
    for col in ("crystal_system", "descriptor_error"):  # None, not NaN, where there is no text
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


class _Cache:
    """Structure descriptors on disk, one parquet file per symprec, merged on save."""

    def __init__(self, cache_dir: str | Path | None, symprec: float):
        self.path = Path(cache_dir or default_cache_dir()) / f"structure-v{DESCRIPTOR_VERSION}-sp{symprec:g}.parquet"
        self.symprec = symprec
        self.known: dict[str, dict] = {}
        self.new: dict[str, dict] = {}
        if self.path.exists():
            try:
                frame = pd.read_parquet(self.path)
                self.known = {k: r for k, r in zip(frame.pop("key"), frame.to_dict("records"))}
            except Exception:  # a corrupt cache is rebuilt, never trusted
                self.known = {}

    def get(self, structure: Structure) -> dict:
        key = structure_key(structure)
        hit = self.known.get(key) or self.new.get(key)
        if hit is None:
            hit = structure_descriptors(structure, self.symprec)
            self.new[key] = hit
        return dict(hit)

    def save(self) -> None:
        if not self.new:
            return
        try:
            merged = {**self.known, **self.new}
            frame = pd.DataFrame(list(merged.values()))
            frame.insert(0, "key", list(merged))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.path)
            self.known, self.new = merged, {}
        except OSError:  # a read-only cache location only costs speed
            pass
