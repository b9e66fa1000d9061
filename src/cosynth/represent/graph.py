"""Crystal graphs for CGCNN: each site linked to its 12 nearest neighbours within 8 Å.

A graph stores, per site, its species and occupancies (atomic numbers, so the cache does not
depend on the element embedding chosen later), the neighbour edges with their distances (the
Gaussian expansion is done in the model, it is cheap) and 8 descriptors of the primitive cell.
Graphs are cached on disk, one ``.npz`` per structure keyed by the hash of its CIF text and the
graph parameters, so reruns and other experiments never rebuild them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosynth.config import cache_dir
from cosynth.io.files import atomic_write

MAX_NEIGHBOURS = 12
RADIUS = 8.0
GRAPH_VERSION = "cgcnn-v1"
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def default_cache_dir() -> Path:
    """``$COSYNTH_CACHE/graphs`` or the user cache dir (``$XDG_CACHE_HOME``, ~/.cache) — never the repo."""
    return cache_dir("graphs")


@dataclass
class CrystalGraph:
    species_site: np.ndarray  # (n_species,) site of each (site, element) entry
    species_z: np.ndarray  # (n_species,) atomic number
    species_occ: np.ndarray  # (n_species,) occupancy (1 on ordered sites)
    centre: np.ndarray  # (n_edges,) receiving site
    neighbour: np.ndarray  # (n_edges,) sending site
    distance: np.ndarray  # (n_edges,) Å
    descriptors: np.ndarray  # (8,) a, b, c, α, β, γ, crystal system 1–7, space-group number
    n_sites: int
    volume_per_atom: float

    def to_npz(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
                np.savez(fh, **{k: getattr(self, k) for k in self.__dataclass_fields__})

        atomic_write(path, write)

    @classmethod
    def from_npz(cls, path: Path) -> "CrystalGraph":
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        d["n_sites"] = int(d["n_sites"])
        d["volume_per_atom"] = float(d["volume_per_atom"])
        return cls(**d)


def cell_descriptors(structure) -> np.ndarray:
    """a, b, c, α, β, γ of the primitive standard cell, crystal system (1–7) and space group.

    Falls back to the given cell, triclinic, P1 when symmetry analysis fails (some disordered
    structures), rather than losing the crystal.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=0.1)
        prim = sga.get_primitive_standard_structure()
        lat = prim.lattice
        system = CRYSTAL_SYSTEMS.index(sga.get_crystal_system()) + 1
        number = sga.get_space_group_number()
    except Exception:
        lat, system, number = structure.lattice, 1, 1
    return np.array([lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma, system, number], dtype=np.float32)


def crystal_graph(structure, max_neighbours: int = MAX_NEIGHBOURS, radius: float = RADIUS) -> CrystalGraph:
    """Graph of a pymatgen Structure (ordered or disordered).

    Each site keeps all its species with their occupancies; edges join each site to its
    ``max_neighbours`` nearest neighbours within ``radius``.

    Args:
        structure: the structure.
        max_neighbours: the most neighbours per site.
        radius: the neighbour cut-off in Å.

    Returns:
        The :class:`CrystalGraph` (with cell descriptors and volume per atom).

    Raises:
        ValueError: the structure has no sites.
    """
    n = len(structure)
    if n == 0:
        raise ValueError("structure has no sites")
    ss, sz, so = [], [], []
    for i, site in enumerate(structure):
        for sp, occ in site.species.items():
            ss.append(i)
            sz.append(sp.Z)
            so.append(occ)
    centre, nbr, _, dist = structure.get_neighbor_list(radius)
    keep = dist > 1e-8  # a site is not its own neighbour at distance 0
    centre, nbr, dist = centre[keep], nbr[keep], dist[keep]
    # keep the max_neighbours nearest of each site: sort by (site, distance), rank within site
    order = np.lexsort((dist, centre))
    centre, nbr, dist = centre[order], nbr[order], dist[order]
    starts = np.searchsorted(centre, np.arange(n))
    rank = np.arange(len(centre)) - starts[centre]
    sel = rank < max_neighbours
    n_atoms = structure.composition.num_atoms
    return CrystalGraph(np.array(ss, dtype=np.int64), np.array(sz, dtype=np.int64), np.array(so, dtype=np.float32),
                        centre[sel].astype(np.int64), nbr[sel].astype(np.int64), dist[sel].astype(np.float32),
                        cell_descriptors(structure), n, float(structure.volume / max(n_atoms, 1e-8)))


def structure_from_cif(cif: str):
    """First structure of a CIF text; ValueError with pymatgen's reason otherwise."""
    import warnings

    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = CifParser.from_str(cif).parse_structures(primitive=False)
    except Exception as err:
        raise ValueError(f"cannot parse CIF: {err}") from None
    if not structures:
        raise ValueError("CIF holds no structure")
    return structures[0]


def cif_key(cif: str, max_neighbours: int = MAX_NEIGHBOURS, radius: float = RADIUS) -> str:
    """Cache key of a CIF's graph: a SHA-256 of the graph version, the graph settings and the CIF text.

    Args:
        cif: the CIF text.
        max_neighbours, radius: the graph settings (:func:`crystal_graph`).

    Returns:
        The hex digest.
    """
    h = hashlib.sha256(f"{GRAPH_VERSION}|{max_neighbours}|{radius}|".encode())
    h.update(cif.encode())
    return h.hexdigest()


class GraphCache:
    """Crystal graphs of CIF texts, built once and kept as ``.npz`` files under ``root``."""

    def __init__(self, root=None, max_neighbours: int = MAX_NEIGHBOURS, radius: float = RADIUS):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.max_neighbours, self.radius = max_neighbours, radius
        self.built = 0  # graphs built (not read from disk) by this object: lets callers see reuse

    def path(self, cif: str) -> Path:
        key = cif_key(cif, self.max_neighbours, self.radius)
        return self.root / GRAPH_VERSION / key[:2] / f"{key}.npz"

    def get(self, cif: str) -> CrystalGraph:
        """Graph of ``cif``; ValueError for CIFs that do not give a structure."""
        path = self.path(cif)
        if path.exists():
            try:
                return CrystalGraph.from_npz(path)
            except Exception:  # a torn or stale file: rebuild it
                pass
        graph = crystal_graph(structure_from_cif(cif), self.max_neighbours, self.radius)
        graph.to_npz(path)
        self.built += 1
        return graph

    def get_many(self, cifs, progress: bool = False) -> tuple[list, dict[int, str]]:
        """(graphs with None where building failed, {position: error message})."""
        graphs, errors = [], {}
        it = enumerate(cifs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(cifs), desc="crystal graphs", leave=False)
        for i, cif in it:
            try:
                graphs.append(self.get(cif))
            except ValueError as err:
                graphs.append(None)
                errors[i] = str(err)
        return graphs, errors


@dataclass
class GraphBatch:
    """Many crystal graphs as one disjoint graph."""

    species_site: torch.Tensor
    species_z: torch.Tensor
    species_occ: torch.Tensor
    centre: torch.Tensor
    neighbour: torch.Tensor
    distance: torch.Tensor
    site_crystal: torch.Tensor  # (n_sites,) crystal of each site
    descriptors: torch.Tensor  # (n_crystals, 8)
    n_sites: int
    n: int

    @classmethod
    def collate(cls, graphs: list[CrystalGraph]) -> "GraphBatch":
        offsets = np.cumsum([0] + [g.n_sites for g in graphs])
        cat = lambda xs, dt: torch.from_numpy(np.concatenate(xs).astype(dt)) if xs else torch.zeros(0, dtype=getattr(torch, dt))  # noqa: E731
        return cls(
            cat([g.species_site + o for g, o in zip(graphs, offsets)], "int64"),
            cat([g.species_z for g in graphs], "int64"),
            cat([g.species_occ for g in graphs], "float32"),
            cat([g.centre + o for g, o in zip(graphs, offsets)], "int64"),
            cat([g.neighbour + o for g, o in zip(graphs, offsets)], "int64"),
            cat([g.distance for g in graphs], "float32"),
            cat([np.full(g.n_sites, i) for i, g in enumerate(graphs)], "int64"),
            torch.from_numpy(np.stack([g.descriptors for g in graphs]).astype(np.float32)) if graphs
            else torch.zeros(0, 8),
            int(offsets[-1]), len(graphs))
