"""Each crystal's energy from a universal interatomic potential, and its energy above a reference hull.

Why: a made-up crystal is usually far from any energy minimum. Gold in the diamond structure
lies about half an electronvolt per atom above gold's known crystal, and a rock salt squeezed by
30 % far more. Descriptors of packing and bonding only hint at that; an energy says it. CHGNet
(its pretrained weights ship inside its wheel, so nothing is downloaded) gives a static energy per
atom in a few tens of milliseconds on one core. No structure is relaxed.

The energy above the hull compares a crystal with a fixed reference set: the lowest energy of each
reduced formula among reference crystals (the benchmark's crystals, labels unused), and, for
elements without a crystal there, the lowest of a few simple lattices of scanned size
(:func:`element_references`). Like the energy above the hull of the Materials Project, which is
taken against every crystal it holds, a crystal's own formula is part of the reference.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

from cosynth.config import cache_dir

ENERGY_MODEL = "chgnet-0.3.0"  # the potential and weights; part of the cache's file name
ABOVE_HULL = "chgnet_above_hull"  # the descriptor: eV/atom above the reference hull (MP's own is e_above_hull)
# one structure per forward pass: CHGNet's float32 sums over a batch move an energy by ~1e-6 eV with
# its batch-mates, and a crystal's prediction must not depend on the shard or batch it came in
# CHGNet's graphs grow with the atoms and, per atom, with the neighbours within 5 Å (and their pairs):
# a cell beyond either limit gets no energy, so that no single crystal can exhaust memory
MAX_ATOMS = 2000
MAX_ATOMS_PER_A3 = 0.5  # the densest crystals (diamond: 0.18) hold far fewer


@lru_cache(maxsize=1)
def potential():
    """The pretrained CHGNet (loaded once per process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from chgnet.model import CHGNet

        return CHGNet.load(model_name=ENERGY_MODEL.split("-", 1)[1], verbose=False)


def structure_energies(structures: Sequence[Structure | None], *, use_cache: bool = True,
                       cache_folder: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """CHGNet's static energy per atom (eV) of each structure; NaN and a message where it fails.

    Args:
        structures: structures (None where a row has none: NaN, no message).
        use_cache: read and write the on-disk cache (keyed by the structure, as the descriptors are).
        cache_folder: the cache's folder (default: the package cache folder ``energies``).
        progress: a progress bar on stderr.

    Returns:
        Columns ``energy_per_atom`` and ``energy_error``, one row per structure.
    """
    from cosynth.represent.descriptors import structure_key

    path = Path(cache_folder or cache_dir("energies")) / f"{ENERGY_MODEL}.parquet"
    known = _read_cache(path) if use_cache else {}
    keys = [structure_key(s) if s is not None else None for s in structures]
    todo = [k for k, key in enumerate(keys) if key is not None and key not in known]
    computed = _energies([structures[k] for k in todo], progress=progress) if todo else []
    new = {keys[k]: value for k, value in zip(todo, computed)}
    if use_cache and new:
        _write_cache(path, {**known, **new})
    values = [(np.nan, None) if key is None else new.get(key) or known[key] for key in keys]
    frame = pd.DataFrame(values, columns=["energy_per_atom", "energy_error"]).astype({"energy_per_atom": float})
    frame["energy_error"] = frame["energy_error"].astype(object).where(frame["energy_error"].notna(), None)
    return frame


def _energies(structures: list[Structure], progress: bool = False) -> list[tuple[float, str | None]]:
    """(energy per atom, error) of each structure, one at a time."""
    out = [(np.nan, f"energy: {problem}") if (problem := _too_big(s)) else None for s in structures]
    todo = [k for k, value in enumerate(out) if value is None]
    model = potential() if todo else None
    if progress and todo:
        import sys

        from tqdm import tqdm

        todo = tqdm(todo, desc="energies", unit="crystal", file=sys.stderr)
    for k in todo:
        try:
            out[k] = (_predict(model, structures[k]), None)
        except Exception as exc:
            out[k] = (np.nan, f"energy: {exc}")
    return out


def _too_big(structure: Structure) -> str | None:
    """Why CHGNet must not take this structure (None: it may)."""
    if len(structure) > MAX_ATOMS:
        return f"not computed for {len(structure)} atoms in the cell (limit {MAX_ATOMS})"
    density = len(structure) / structure.volume
    if density > MAX_ATOMS_PER_A3:
        return f"not computed: {density:.2f} atoms per cubic ångström, denser than any crystal (limit {MAX_ATOMS_PER_A3})"
    return None


def _predict(model, structure: Structure) -> float:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return float(model.predict_graph(model.graph_converter(structure), task="e")["e"])


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        frame = pd.read_parquet(path)
    except Exception:  # a corrupt cache is rebuilt, never trusted
        return {}
    return {k: (float(e), m) for k, e, m in zip(frame["key"], frame["energy_per_atom"], frame["energy_error"])}


def _write_cache(path: Path, values: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame([(k, e, m) for k, (e, m) in values.items()], columns=["key", "energy_per_atom", "energy_error"])
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError:  # a read-only cache location only costs time
        pass


# nearest-neighbour distances tried, over twice the covalent radius (up to 1.6: noble gases sit far apart)
SCAN = np.concatenate([np.linspace(0.8, 1.3, 11), [1.4, 1.5, 1.6]])


def element_references(elements: Sequence[str]) -> dict[str, float]:
    """Each element's lowest CHGNet energy per atom over simple lattices (fcc, bcc, hcp, diamond,
    and a dimer in a 12 Å box for a molecular crystal), each at :data:`SCAN`'s nearest-neighbour
    distances.

    Why: the reference hull needs every element's own energy, and some elements have no crystal
    among the reference crystals. A simple lattice is often the element's real structure (gold,
    lanthanides), and a scan of one length finds its minimum without a relaxation; where the real
    structure is not simple (boron), the reference is too high.
    """
    from ase.data import atomic_numbers, covalent_radii
    from pymatgen.core import Lattice

    def lattices(x: str, d: float) -> list[Structure]:
        diamond = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.25, 0.25, 0.25],
                   [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]]
        return [Structure(Lattice.cubic(d * 2 ** 0.5), [x] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
                Structure(Lattice.cubic(d * 2 / 3 ** 0.5), [x] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),
                Structure(Lattice.hexagonal(d, d * 1.633), [x] * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                Structure(Lattice.cubic(d * 4 / 3 ** 0.5), [x] * 8, diamond),
                Structure(Lattice.cubic(12.0), [x] * 2, [[0, 0, 0], [d / 12.0, 0, 0]])]

    references = {}
    for element in elements:
        d = 2 * float(covalent_radii[atomic_numbers[element]])
        tried = [s for scale in SCAN for s in lattices(element, d * scale)]
        references[element] = float(np.nanmin(structure_energies(tried, use_cache=False)["energy_per_atom"]))
    return references


class Hull:
    """The lowest energy per atom of each reduced formula of a reference set; each crystal's energy
    above their convex hull, taken within the crystal's own chemical system.

    Args:
        lowest: ``{reduced formula: lowest energy per atom (eV)}``; every element needs its own entry.
    """

    def __init__(self, lowest: dict[str, float]):
        self.lowest = {str(f): float(e) for f, e in lowest.items()}
        self._systems: dict[frozenset, object] = {}
        self._by_system: dict[frozenset, list] = {}  # each entry under its own set of elements
        for formula, energy in self.lowest.items():
            composition = Composition(formula)
            self._by_system.setdefault(frozenset(e.symbol for e in composition.elements), []).append(
                (composition, energy))
        self._elements = {next(iter(s)) for s in self._by_system if len(s) == 1}

    @classmethod
    def of(cls, formulas: Sequence[str], energies: Sequence[float], elements: dict[str, float] | None = None) -> "Hull":
        """The hull of crystals (their reduced formulas and energies per atom; NaN ignored), with
        element references for elements that none of them is made of alone."""
        frame = pd.DataFrame({"formula": list(formulas), "energy": np.asarray(energies, float)}).dropna()
        lowest = frame.groupby("formula")["energy"].min().to_dict()
        for element, energy in (elements or {}).items():
            formula = Composition(element).reduced_formula
            lowest[formula] = min(lowest.get(formula, np.inf), energy)
        return cls(lowest)

    def missing_elements(self, formulas: Sequence[str]) -> list[str]:
        """Elements of ``formulas`` that have no own entry in the reference."""
        return sorted({e.symbol for f in formulas for e in Composition(f).elements} - self._elements)

    def above(self, formulas: Sequence[str | None], energies: Sequence[float]) -> np.ndarray:
        """Energy above the hull (eV/atom; negative below it) of each crystal; NaN where the
        energy or the formula is missing or unreadable, or an element has no reference."""
        out = np.full(len(formulas), np.nan)
        for k, (formula, energy) in enumerate(zip(formulas, energies)):
            if formula is None or not np.isfinite(energy):
                continue
            try:
                composition = Composition(formula)
            except Exception:  # noqa: BLE001 - an unreadable formula has no place on any hull
                continue
            diagram = self._diagram(frozenset(e.symbol for e in composition.elements))
            if diagram is not None:
                out[k] = self._above(diagram, composition, float(energy))
        return out

    def _diagram(self, system: frozenset):
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

        if system not in self._systems:
            members = sorted(system)
            subsets = (frozenset(x for j, x in enumerate(members) if mask >> j & 1) for mask in range(1, 2 ** len(members)))
            entries = [PDEntry(c, e * c.num_atoms) for subset in subsets for c, e in self._by_system.get(subset, ())]
            self._systems[system] = PhaseDiagram(entries) if system <= self._elements else None
        return self._systems[system]

    @staticmethod
    def _above(diagram, composition: Composition, energy_per_atom: float) -> float:
        from pymatgen.analysis.phase_diagram import PDEntry

        entry = PDEntry(composition, energy_per_atom * composition.num_atoms)
        return float(diagram.get_e_above_hull(entry, allow_negative=True))


def above_hull(formulas: Sequence[str | None], structures: Sequence[Structure | None], hull: Hull, *,
               use_cache: bool = True, cache_folder: str | Path | None = None, progress: bool = False) -> np.ndarray:
    """Each structure's CHGNet energy above ``hull`` (eV/atom); NaN without a structure, an energy
    or a reference for one of its elements (the cache as in :func:`structure_energies`)."""
    energies = structure_energies(structures, use_cache=use_cache, cache_folder=cache_folder,
                                  progress=progress)["energy_per_atom"]
    return hull.above(formulas, energies.to_numpy(float))
