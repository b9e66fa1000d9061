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
    "MAX_ATOMS",
    "MAX_CELL_LENGTH",
    "MAX_EXTENT",
    "MEMORY_BUDGET",
    "MIN_DISTANCE",
    "CrystalValidationError",
    "check_bounds",
    "check_tiling_budget",
    "tiling_cost",
    "validate_structure",
]

#: Å. Diagonal of a voxel, rounded up: two atoms closer than this could share a voxel.
MIN_DISTANCE = 0.6766
#: Å. Edge of the image box; sites spread wider than this would be cut off.
MAX_EXTENT = 50.0

#: Atoms in one cell. The 50 Å image box holds at most ~6e5 atoms 0.68 Å apart; real cells hold < 2e4.
MAX_ATOMS = 100_000
#: Å. No crystal cell edge is longer (a longer one is a typo such as 1e30, or a molecule in a huge box).
MAX_CELL_LENGTH = 1000.0
#: Bytes. The most memory one crystal may make a stage (neighbour search, tiling) allocate.
MEMORY_BUDGET = 1 << 30
#: Bytes per candidate point (atom × periodic translation) in the tiling's and the neighbour
#: search's temporary arrays (float32 and float64 copies of the coordinates, masks), rounded up.
_BYTES_PER_CANDIDATE = 128
#: Candidate points the whole tiling may visit (time, not memory: visited slab by slab). Any cell
#: with atoms ≥ 0.68 Å apart and a reduced shape needs < 4e6.
_MAX_TILING_CANDIDATES = 50_000_000

#: An occupancy this close to 1 is rounding in the source file, not disorder.
_OCCUPANCY_TOL = 1e-3
_RESOLVE_MODES = ("error", "majority")


class CrystalValidationError(ValueError):
    """A crystal that parses but cannot be imaged faithfully (data error, not a bug)."""


class _BudgetError(CrystalValidationError):
    """The cell's basis makes the work too large; a reduced basis of the same lattice may not."""


def validate_structure(
    structure: Structure,
    *,
    min_distance: float = MIN_DISTANCE,
    max_extent: float | None = MAX_EXTENT,
    resolve_disorder: str = "error",
    max_atoms: int = MAX_ATOMS,
    max_cell_length: float = MAX_CELL_LENGTH,
    memory_budget: int = MEMORY_BUDGET,
) -> Structure:
    """Return ``structure`` if it passes all checks (a new, ordered one if disorder was resolved).

    Cheap checks come first, so no input can make a later one slow or memory-hungry
    (:func:`check_bounds`): no atoms; too many atoms; non-finite lattice; cell lengths; non-finite
    coordinates; degenerate cell; more atoms per volume than ``min_distance`` allows; Cartesian
    extent of the sites; the work of the voxel tiling and of the neighbour search within
    ``memory_budget`` (a cell too oblique for them is replaced by its LLL-reduced cell, the same
    crystal). Then: unknown elements; disorder; minimum periodic interatomic distance.

    Args:
        structure: the crystal.
        min_distance: the smallest allowed interatomic distance (Å), periodic images included.
        max_extent: the widest allowed Cartesian spread of the sites (Å), the image box; None
            skips this check (models that do not image the crystal).
        resolve_disorder: ``"error"`` fails on a disordered site; ``"majority"`` keeps the majority
            species of each disordered site instead (ties go to the species listed first).
        max_atoms, max_cell_length: the most atoms in the cell; the longest cell vector (Å).
        memory_budget: bytes the neighbour search and one slab of the voxel tiling may use.

    Returns:
        The structure (possibly LLL-reduced, or a new ordered one).

    Raises:
        CrystalValidationError: a check failed; the message says which and why.
        ValueError: an unknown ``resolve_disorder``.
    """
    if resolve_disorder not in _RESOLVE_MODES:
        raise ValueError(f"resolve_disorder must be one of {_RESOLVE_MODES}, got {resolve_disorder!r}")
    limits = dict(min_distance=min_distance, max_extent=max_extent, max_atoms=max_atoms,
                  max_cell_length=max_cell_length, memory_budget=memory_budget)
    try:
        check_bounds(structure, **limits)
    except _BudgetError:
        # A very oblique basis of a sound lattice: the same crystal in its LLL-reduced cell
        # needs far fewer translations (its image is the image of the reduced cell).
        structure = structure.get_reduced_structure("LLL")
        check_bounds(structure, **limits)
    _check_elements(structure)
    structure = _resolve_disorder(structure, resolve_disorder)
    _check_min_distance(structure, min_distance)
    return structure


def check_bounds(
    structure: Structure,
    *,
    min_distance: float = MIN_DISTANCE,
    max_extent: float | None = MAX_EXTENT,
    max_atoms: int = MAX_ATOMS,
    max_cell_length: float = MAX_CELL_LENGTH,
    memory_budget: int = MEMORY_BUDGET,
) -> None:
    """The checks that cost O(atoms) time and memory, whatever the numbers in the input.

    After them, the neighbour search of the distance check and the voxel tiling are known
    to stay within ``memory_budget`` bytes and a bounded time; a 1e30 Å or 1e-30 Å cell
    or a million atoms is rejected here with a message instead of exhausting memory.
    Above 2000 atoms, crowded atoms are also found on a grid before any neighbour search.

    Args:
        structure: the crystal.
        min_distance, max_extent, max_atoms, max_cell_length, memory_budget: the limits, as in
            :func:`validate_structure`.

    Raises:
        CrystalValidationError: a check failed (a too-large tiling or neighbour search raises the
            subclass that :func:`validate_structure` retries with a reduced cell).
    """
    n = len(structure)
    if n == 0:
        raise CrystalValidationError("no atoms")
    if n > max_atoms:
        raise CrystalValidationError(f"too many atoms: {n} in the cell (limit {max_atoms})")
    matrix = np.asarray(structure.lattice.matrix, dtype=np.float64)
    if not np.all(np.isfinite(matrix)):
        raise CrystalValidationError("non-finite lattice (a cell length or angle is NaN or infinite)")
    lengths = np.linalg.norm(matrix, axis=1)
    for axis, length in zip("abc", lengths, strict=True):
        if not length <= max_cell_length:
            raise CrystalValidationError(f"cell length {axis} = {length:.4g} Å is beyond the {max_cell_length:g} Å "
                                         "limit (not a crystal cell)")
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(frac), axis=1))
    if bad.size:
        raise CrystalValidationError(f"non-finite coordinates at site {int(bad[0])} (NaN or infinite)")
    volume = abs(float(np.linalg.det(matrix)))
    if not volume >= 1e-6:
        raise CrystalValidationError(f"degenerate cell (volume {volume:.3g} Å³)")
    for length in lengths:
        if length < min_distance:
            # the same words as the neighbour search would give, without running it
            raise CrystalValidationError(
                f"atom 0 and its own periodic image are {length:.2f} Å apart (< {min_distance:g} Å minimum)"
            )
    # Spheres of diameter min_distance around the atoms cannot fill more than the fcc packing
    # fraction of the cell, so a denser cell has a close pair whatever the positions.
    densest = np.sqrt(2.0) / min_distance**3 if min_distance > 0 else np.inf
    if n / volume > densest:
        raise CrystalValidationError(
            f"{n} atoms in a {volume:.4g} Å³ cell ({volume / n:.3g} Å³ per atom): some atoms must be closer "
            f"than the {min_distance:g} Å minimum distance"
        )
    cart = frac @ matrix
    if not np.all(np.isfinite(cart)):
        raise CrystalValidationError("non-finite Cartesian coordinates (coordinates too large for the cell)")
    if max_extent is not None:
        _check_extent(cart, max_extent)
    _check_search_budget(matrix, frac, min_distance, memory_budget)
    if n > _CROWD_CHECK_ATOMS:
        _check_crowding(matrix, frac, min_distance)
    from cosynth.represent.voxel import standard_frame

    cell, positions = standard_frame(matrix, cart)
    check_tiling_budget(cell, positions, memory_budget=memory_budget)


#: Above this many atoms, crowded atoms are found on a grid before the neighbour search, whose
#: output (all pairs closer than the cut-off) would otherwise grow as atoms² (1e5 coincident atoms: 1e10 pairs).
_CROWD_CHECK_ATOMS = 2000


def _check_crowding(matrix: np.ndarray, frac: np.ndarray, min_distance: float) -> None:
    """Two atoms in one grid cube of diagonal ``min_distance`` are closer than it: report them.

    After this, no cube holds two atoms, so each atom has a bounded number of neighbours within
    the cut-off and the neighbour list stays O(atoms).
    """
    side = min_distance / np.sqrt(3.0)
    cart = (frac - np.floor(frac)) @ matrix
    keys = np.floor(cart / side).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    crowded = np.flatnonzero(counts > 1)
    if crowded.size == 0:
        return
    i, j = (int(k) for k in np.flatnonzero(inverse.reshape(-1) == crowded[0])[:2])
    d = float(np.linalg.norm(cart[i] - cart[j]))
    raise CrystalValidationError(f"atoms {i} and {j} are {d:.2f} Å apart (< {min_distance:g} Å minimum)")


def tiling_cost(cell, positions) -> tuple[int, int]:
    """(candidate points of the whole tiling, largest slab) of :class:`~cosynth.represent.voxel.CrystalImager`.

    The voxel tiling visits every translation n·cell (n in the box spanned by the 86.6 Å
    rotation cube's corners in fractional coordinates, as in ``voxel._tile``) for every atom,
    one ``a``-slab at a time; both numbers are atoms × translations, computed in O(atoms)
    without building anything (floats, so a 1e-30 Å cell cannot overflow).
    """
    from cosynth.represent.voxel import BIG_BOX, CENTER

    cell = np.asarray(cell, dtype=np.float64)
    q = np.asarray(positions, dtype=np.float64)
    with np.errstate(all="ignore"):
        q = q + (CENTER - (q.max(axis=0) + q.min(axis=0)) / 2)
        inv = np.linalg.inv(cell)
        corners = np.array([[x, y, z] for x in (0, BIG_BOX) for y in (0, BIG_BOX) for z in (0, BIG_BOX)]) @ inv
        qf = q @ inv
        lo = np.floor(corners.min(axis=0) - qf.max(axis=0)) - 1
        hi = np.ceil(corners.max(axis=0) - qf.min(axis=0)) + 1
        counts = hi - lo + 1
    if not np.all(np.isfinite(counts)):
        return 2**62, 2**62
    n = len(q)
    total, slab = float(np.prod(counts)) * n, float(counts[1] * counts[2]) * n
    return int(min(total, 2**62)), int(min(slab, 2**62))


def check_tiling_budget(cell, positions, *, memory_budget: int = MEMORY_BUDGET) -> None:
    """Raise :class:`CrystalValidationError` if the voxel tiling of this crystal would exceed its budget.

    Too large means one slab needs more than ``memory_budget`` bytes, or the whole tiling visits more
    candidate points than the budget (and 5e7) allows (:func:`tiling_cost`).

    Args:
        cell, positions: the lattice and Cartesian positions in the frame the imager uses
            (:func:`~cosynth.represent.voxel.standard_frame`).
        memory_budget: bytes one slab may use.

    Raises:
        CrystalValidationError: the tiling is too large.
    """
    total, slab = tiling_cost(cell, positions)
    limit = min(_MAX_TILING_CANDIDATES, memory_budget // _BYTES_PER_CANDIDATE * 8)
    if slab * _BYTES_PER_CANDIDATE > memory_budget or total > limit:
        raise _BudgetError(
            f"voxel tiling too large: {total:.3g} atom translations to fill the 86.6 Å rotation cube (limit "
            f"{limit:.3g}; {slab * _BYTES_PER_CANDIDATE / 2**20:.3g} MiB per slab, budget "
            f"{memory_budget / 2**20:.0f} MiB); the cell is too small or too oblique, use a reduced cell"
        )


def _check_search_budget(matrix: np.ndarray, frac: np.ndarray, r: float, memory_budget: int) -> None:
    """The periodic neighbour search copies every atom into each image cell its cut-off reaches."""
    with np.errstate(all="ignore"):
        heights = 1.0 / np.linalg.norm(np.linalg.inv(matrix), axis=0)  # spacing of the lattice planes
        reach = r / heights
        images = np.floor(frac.max(axis=0) + reach) - np.floor(frac.min(axis=0) - reach) + 1
        need = float(np.prod(images)) * len(frac) * _BYTES_PER_CANDIDATE
    if not need <= memory_budget:
        raise _BudgetError(
            f"distance check too large: {float(np.prod(images)):.3g} periodic images × {len(frac)} atoms "
            f"(~{need / 2**20:.3g} MiB, budget {memory_budget / 2**20:.0f} MiB); the cell is too oblique or the "
            "coordinates lie far outside it, use a reduced cell"
        )


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
                "mixed species); keep the majority species with --resolve-disorder-majority "
                "(Python: resolve_disorder='majority')"
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


def _check_extent(coords: np.ndarray, max_extent: float) -> None:
    """Sites spread wider than the image box would be cropped out of the image."""
    extent = coords.max(axis=0) - coords.min(axis=0)
    axis = int(np.argmax(extent))
    if extent[axis] > max_extent:
        span = f"{extent[axis]:.1f}" if extent[axis] < 1e6 else f"{extent[axis]:.3g}"
        raise CrystalValidationError(f"atoms span {span} Å along {'xyz'[axis]} (> {max_extent:g} Å image box)")
