"""Checks that a crystal can be turned into a voxel image without silently lying.

Every check raises :class:`CrystalValidationError` with a message that names the
specific problem (site indices, species, distance, axis), because the message is
what a materials scientist reads in the prediction table next to the crystal id.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Element, PeriodicSite, Structure
from pymatgen.core.periodic_table import DummySpecies

__all__ = [
    "MAX_EXTENT",
    "MIN_DISTANCE",
    "CrystalValidationError",
    "validate_structure",
]

#: Å. Diagonal of a voxel, rounded up: two atoms closer than this could share a voxel.
MIN_DISTANCE = 0.6766
#: Å. Edge of the image box; sites spread wider than this would be cut off.
MAX_EXTENT = 50.0

#: An occupancy this close to 1 is rounding in the source file, not disorder.
_OCCUPANCY_TOL = 1e-3
_RESOLVE_MODES = ("error", "majority")


class CrystalValidationError(ValueError):
    """A crystal that parses but cannot be imaged faithfully (data error, not a bug)."""


def validate_structure(
    structure: Structure,
    *,
    min_distance: float = MIN_DISTANCE,
    max_extent: float = MAX_EXTENT,
    resolve_disorder: str = "error",
) -> Structure:
    """Return ``structure`` if it passes all checks (a new, ordered one if disorder was resolved).

    Checks, in order: no atoms; unknown elements; disorder; minimum periodic
    interatomic distance; Cartesian extent of the sites. ``resolve_disorder=
    "majority"`` keeps the majority species of each disordered site instead of
    failing (ties go to the species listed first).
    """
    if resolve_disorder not in _RESOLVE_MODES:
        raise ValueError(f"resolve_disorder must be one of {_RESOLVE_MODES}, got {resolve_disorder!r}")
    if len(structure) == 0:
        raise CrystalValidationError("no atoms")
    _check_elements(structure)
    structure = _resolve_disorder(structure, resolve_disorder)
    _check_cell(structure)
    _check_min_distance(structure, min_distance)
    _check_extent(structure, max_extent)
    return structure


def _species_label(site: PeriodicSite) -> str:
    return " ".join(f"{sp}{occ:g}" for sp, occ in site.species.items())


def _check_elements(structure: Structure) -> None:
    """Dummy species, 'X' and vacancies have no atomic number to draw."""
    for i, site in enumerate(structure):
        for sp in site.species:
            if isinstance(sp, DummySpecies):
                raise CrystalValidationError(
                    f"unknown element {sp.symbol!r} at site {i} (not a real element)"
                )
            element = getattr(sp, "element", sp)
            z = getattr(element, "Z", 0)
            if not isinstance(element, Element) or not 1 <= z <= 118:
                raise CrystalValidationError(f"unknown element {str(sp)!r} at site {i} (Z={z})")


def _resolve_disorder(structure: Structure, mode: str) -> Structure:
    """Make every site a single species with occupancy 1, or explain why not."""
    species = []
    changed = False
    for i, site in enumerate(structure):
        items = list(site.species.items())
        if len(items) == 1 and abs(items[0][1] - 1.0) <= _OCCUPANCY_TOL:
            species.append(items[0][0])
            changed |= items[0][1] != 1.0
            continue
        changed = True
        if mode == "error":
            raise CrystalValidationError(
                f"site {i} ({_species_label(site)}) is disordered (partial occupancy or "
                "mixed species); use resolve_disorder='majority' to keep the majority species"
            )
        best = max(range(len(items)), key=lambda k: (items[k][1], -k))
        species.append(items[best][0])
    if not changed:
        return structure
    return Structure(
        structure.lattice,
        species,
        structure.frac_coords,
        site_properties=structure.site_properties or None,
        properties=dict(structure.properties),
    )


def _check_cell(structure: Structure) -> None:
    """A flat or non-finite cell would make the neighbour search meaningless."""
    matrix = structure.lattice.matrix
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(structure.frac_coords)):
        raise CrystalValidationError("non-finite lattice or coordinates")
    volume = abs(float(np.linalg.det(matrix)))
    if volume < 1e-6:
        raise CrystalValidationError(f"degenerate cell (volume {volume:.3g} Å³)")


def _check_min_distance(structure: Structure, min_distance: float) -> None:
    """Closest pair over all periodic images, for any cell shape.

    pymatgen's neighbour search sizes the image range from the cell's plane
    spacings, so very oblique cells and an atom's own images are handled; a loop
    over neighbour cells -1..1 would miss them.
    """
    centers, points, offsets, distances = structure.get_neighbor_list(
        r=min_distance, exclude_self=False
    )
    if len(distances) == 0:
        return
    # The only pair to ignore is an atom with itself at zero offset.
    keep = ~((centers == points) & np.all(offsets == 0, axis=1))
    keep &= distances < min_distance
    if not np.any(keep):
        return
    k = int(np.flatnonzero(keep)[np.argmin(distances[keep])])
    i, j, d = int(centers[k]), int(points[k]), float(distances[k])
    i, j = min(i, j), max(i, j)
    if i == j:
        raise CrystalValidationError(
            f"atom {i} and its own periodic image are {d:.2f} Å apart (< {min_distance:g} Å minimum)"
        )
    raise CrystalValidationError(f"atoms {i} and {j} are {d:.2f} Å apart (< {min_distance:g} Å minimum)")


def _check_extent(structure: Structure, max_extent: float) -> None:
    """Sites spread wider than the image box would be cropped out of the image."""
    coords = structure.cart_coords
    extent = coords.max(axis=0) - coords.min(axis=0)
    axis = int(np.argmax(extent))
    if extent[axis] > max_extent:
        raise CrystalValidationError(
            f"atoms span {extent[axis]:.1f} Å along {'xyz'[axis]} (> {max_extent:g} Å image box)"
        )
