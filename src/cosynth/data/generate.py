"""CSPD-like generator of hypothetical ("unsynthesizable") polymorphs.

For each target formula: take prototypes with the same anonymous formula (AB2, ABC3, ...) from a
pool of known structures, put the target's elements on the prototype's sites, scale the cell to
a target volume, reject crystals with too-short interatomic distances, remove duplicates and
drop any that match a known experimental structure of the formula (those are positives).

The volume rule is where the bias of the paper comes from. ``volume="covalent"`` (default, the
CSPD rule) sets the volume from covalent radii alone: sum of the atoms' covalent-radius sphere
volumes divided by a packing fraction (0.74, close-packed spheres). Real crystals of open,
directional structures (oxides, silicates) pack their covalent spheres far less densely, so
these candidates come out denser than the real polymorphs of the same formula: a shortcut a
classifier can learn without any notion of synthesizability. ``volume="reference"`` scales to a
given volume per atom per formula (e.g. the median of its known structures), which removes the
shortcut; ``volume="unchanged"`` keeps the prototype's cell.

Everything is deterministic given ``seed``: the prototypes tried for a formula are drawn with a
generator seeded by (seed, formula), so adding a formula does not change the others.
"""

from __future__ import annotations

import warnings
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from ase.data import covalent_radii
from pymatgen.core import Composition, Element, Structure

from cosynth.io.validate import MIN_DISTANCE

__all__ = ["GeneratorConfig", "generate_negatives", "substitute", "scale_structure", "VOLUME_MODES"]

VOLUME_MODES = ("covalent", "reference", "unchanged")
CLOSE_PACKING = 0.7405  # π / (3√2): densest packing of equal spheres


@dataclass
class GeneratorConfig:
    """Options of :func:`generate_negatives` (recorded in dataset cards)."""

    volume: str = "covalent"
    packing_fraction: float = CLOSE_PACKING
    min_distance_factor: float = 0.7
    min_distance: float = MIN_DISTANCE
    max_prototypes: int = 30
    max_sites: int = 40
    max_per_formula: int | None = None
    dedupe: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.volume not in VOLUME_MODES:
            raise ValueError(f"volume must be one of {VOLUME_MODES}, got {self.volume!r}")
        if not 0 < self.packing_fraction <= 1:
            raise ValueError(f"packing_fraction must be in (0, 1], got {self.packing_fraction}")


def _formula_rng(seed: int, formula: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(formula.encode())])


def _site_order(comp: Composition) -> list[Element]:
    """Elements ordered by (amount, electronegativity, Z): the order in which sites are mapped.

    Equal amounts are matched by electronegativity so that cation sites stay cation sites.
    """
    def key(el):
        x = el.X if el.X == el.X else 0.0  # noble gases have no Pauling electronegativity
        return (comp[el] / comp.num_atoms, x, el.Z)

    return sorted(comp.elements, key=key)


def substitution_map(prototype: Composition, target: Composition) -> dict[str, str]:
    """Element of the prototype → element of the target; ValueError if stoichiometries differ."""
    p, t = prototype.reduced_composition, target.reduced_composition
    if p.anonymized_formula != t.anonymized_formula:
        raise ValueError(f"prototype {p.reduced_formula} ({p.anonymized_formula}) does not have the "
                         f"stoichiometry of {t.reduced_formula} ({t.anonymized_formula})")
    return {a.symbol: b.symbol for a, b in zip(_site_order(p), _site_order(t))}


def substitute(prototype: Structure, target: str | Composition) -> tuple[Structure, dict[str, str]]:
    """A copy of ``prototype`` with the target's elements on its sites (cell unchanged)."""
    target = Composition(target)
    mapping = substitution_map(prototype.composition, target)
    out = prototype.copy()
    out.replace_species({Element(a): Element(b) for a, b in mapping.items()})
    return out, mapping


def covalent_volume(structure: Structure, packing_fraction: float = CLOSE_PACKING) -> float:
    """Cell volume at which the atoms' covalent-radius spheres fill ``packing_fraction``."""
    numbers = [site.specie.Z for site in structure]
    return float(np.sum(4.0 / 3.0 * np.pi * covalent_radii[numbers] ** 3) / packing_fraction)


def scale_structure(structure: Structure, mode: str, *, packing_fraction: float = CLOSE_PACKING,
                    volume_per_atom: float | None = None) -> Structure:
    """Isotropically scaled copy (fractional coordinates kept) by the rule ``mode``.

    Args:
        structure: the structure (not modified).
        mode: ``covalent``, ``reference`` or ``unchanged`` (see the module doc).
        packing_fraction: for ``covalent``: the share of the cell the covalent spheres fill.
        volume_per_atom: for ``reference``: the target Å³ per atom.

    Returns:
        The scaled copy.

    Raises:
        ValueError: an unknown mode, or ``reference`` without a positive volume per atom.
    """
    out = structure.copy()
    if mode == "covalent":
        out.scale_lattice(covalent_volume(structure, packing_fraction))
    elif mode == "reference":
        if volume_per_atom is None or not volume_per_atom > 0:
            raise ValueError("reference scaling needs a positive volume per atom")
        out.scale_lattice(volume_per_atom * len(structure))
    elif mode != "unchanged":
        raise ValueError(f"volume must be one of {VOLUME_MODES}, got {mode!r}")
    return out


def short_contact(structure: Structure, factor: float, floor: float) -> str | None:
    """Why the closest pair is too close, or None when every pair is far enough.

    A pair (periodic images included) is too close below the larger of ``factor`` × the sum of their
    covalent radii and ``floor``.

    Args:
        structure: the structure to check.
        factor: multiple of the covalent radii sum.
        floor: absolute minimum distance in Å.

    Returns:
        A sentence naming the worst pair (smallest distance / limit), or None.
    """
    radii = covalent_radii[[site.specie.Z for site in structure]]
    cutoff = max(float(factor * 2 * radii.max()), floor)
    centers, points, offsets, dists = structure.get_neighbor_list(r=cutoff, exclude_self=False)
    self_zero = (centers == points) & np.all(offsets == 0, axis=1)
    centers, points, dists = centers[~self_zero], points[~self_zero], dists[~self_zero]
    if len(dists) == 0:
        return None
    limit = np.maximum(factor * (radii[centers] + radii[points]), floor)
    bad = dists < limit
    if not bad.any():
        return None
    k = int(np.flatnonzero(bad)[np.argmin((dists / limit)[bad])])
    i, j = sorted((int(centers[k]), int(points[k])))
    si, sj = structure[i].specie.symbol, structure[j].specie.symbol
    pair = f"atom {i} ({si}) and its own periodic image" if i == j else f"atoms {i} ({si}) and {j} ({sj})"
    return (f"{pair} are {dists[k]:.2f} Å apart, below the minimum "
            f"{limit[k]:.2f} Å (max of {factor:g} × covalent radii sum and {floor:g} Å)")


def _pool_index(pool) -> tuple[list[str], list[str], list, dict[str, list[int]]]:
    """(ids, formulas, structure getter, anonymous formula → positions) of a prototype pool.

    ``pool`` is a CrystalTable (structures parsed only when a prototype is used) or an
    iterable of (id, Structure).
    """
    if hasattr(pool, "frame"):
        frame = pool.frame
        has = pool.has_structure()
        ids = frame["id"].astype(str).tolist()
        formulas = frame["formula"].astype(str).tolist()
        keep = [i for i in range(len(frame)) if has[i]]
        sub = pool.subset(np.asarray(keep, dtype=np.int64)) if len(keep) < len(frame) else pool
        ids = [ids[i] for i in keep]
        formulas = [formulas[i] for i in keep]
        cache: dict[int, Structure | None] = {}

        def get(i):
            if i not in cache:
                cache[i] = sub.subset(np.asarray([i])).structures()[0]
            return cache[i]
    else:
        items = list(pool)
        ids = [str(i) for i, _ in items]
        structs = [s for _, s in items]
        formulas = [s.composition.reduced_formula for s in structs]

        def get(i):
            return structs[i]

    by_anon: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(formulas):
        try:
            by_anon[Composition(f).anonymized_formula].append(i)
        except Exception:
            continue
    return ids, formulas, get, by_anon


def _named(structures, formula: str) -> list[tuple[str, Structure]]:
    """Known structures as (name, Structure); plain Structures get "<formula>#k"."""
    return [item if isinstance(item, tuple) else (f"{formula}#{k}", item) for k, item in enumerate(structures)]


def reference_volumes(known: Mapping[str, list]) -> dict[str, float]:
    """Volume per atom (Å³) at which a crystal of each formula has the median number density of
    its known structures: the ``volume="reference"`` target that removes the density shortcut.

    Args:
        known: formula → list of (id, Structure) of known (positive) crystals.

    Returns:
        formula → Å³ per atom, for formulas with at least one structure.
    """
    return {f: float(1.0 / np.median([len(s) / s.volume for _, s in items])) for f, items in known.items() if items}


def generate_negatives(formulas: Iterable[str], pool, *, known: Mapping[str, list[Structure]] | None = None,
                       reference_volumes: Mapping[str, float] | None = None,
                       config: GeneratorConfig | None = None, **options):
    """Hypothetical polymorphs of each formula, as a CrystalTable (label 0, source "generated").

    Per formula, up to ``max_prototypes`` usable prototypes (ordered, at most ``max_sites`` sites) are tried
    in a seeded order. Rejected candidates and formulas are in ``errors`` with the reason (invalid formula,
    no reference volume, no prototype, substitution failed, short contact, duplicate, matches a known structure).

    Args:
        formulas: target formulas; duplicates are generated once.
        pool: prototypes (CrystalTable or (id, Structure) pairs); a prototype of the target's own
            formula is never used.
        known: formula → experimental structures (or (id, Structure) pairs); with ``dedupe`` (the default),
            candidates matching one are dropped.
        reference_volumes: formula → Å³/atom for ``volume="reference"``.
        config: generator options (default :class:`GeneratorConfig`).
        **options: override fields of ``config``.

    Returns:
        A CrystalTable with id, formula, cif, label, source, prototype_id, prototype_formula, substitution,
        scaling, volume_factor and volume_per_atom columns.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.cif import CifWriter

    from cosynth.data.table import CrystalTable, normalize_formula

    config = config or GeneratorConfig()
    if options:
        config = GeneratorConfig(**{**config.__dict__, **options})
    known = known or {}
    ids, pool_formulas, get, by_anon = _pool_index(pool)
    matcher = StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5, scale=True, primitive_cell=True)

    rows: list[dict] = []
    rejected: list[dict] = []
    n_tried = 0
    for raw in dict.fromkeys(formulas):  # unique, in the order given
        try:
            formula = normalize_formula(raw)
        except ValueError as exc:
            rejected.append({"row": -1, "id": f"gen:{raw}", "error": str(exc)})
            continue
        target = Composition(formula)
        if config.volume == "reference" and not (reference_volumes or {}).get(formula):
            rejected.append({"row": -1, "id": f"gen:{formula}",
                             "error": f"no reference volume per atom for {formula}"})
            continue
        anon = target.anonymized_formula
        candidates = [i for i in by_anon.get(anon, []) if pool_formulas[i] != formula]
        if not candidates:
            rejected.append({"row": -1, "id": f"gen:{formula}",
                             "error": f"no prototype with anonymous formula {anon} in the pool"})
            continue
        order = _formula_rng(config.seed, formula).permutation(len(candidates))
        kept: list[tuple[dict, Structure]] = []
        tried = 0
        for k in order:
            if tried >= config.max_prototypes:
                break
            if config.max_per_formula is not None and len(kept) >= config.max_per_formula:
                break
            i = candidates[int(k)]
            proto = get(i)
            if proto is None or not proto.is_ordered or len(proto) > config.max_sites:
                continue
            tried += 1
            n_tried += 1
            gid = f"gen:{formula}:{ids[i]}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    sub, mapping = substitute(proto, target)
                    new = scale_structure(sub, config.volume, packing_fraction=config.packing_fraction,
                                          volume_per_atom=(reference_volumes or {}).get(formula))
                except Exception as exc:
                    rejected.append({"row": n_tried - 1, "id": gid, "error": f"substitution failed: {exc}"})
                    continue
                reason = short_contact(new, config.min_distance_factor, config.min_distance)
                if reason is not None:
                    rejected.append({"row": n_tried - 1, "id": gid, "error": f"short contact: {reason}"})
                    continue
                if config.dedupe:
                    dup = next((r["id"] for r, s in kept if matcher.fit(s, new)), None)
                    if dup is not None:
                        rejected.append({"row": n_tried - 1, "id": gid, "error": f"duplicate of {dup}"})
                        continue
                    twin = next((name for name, s in _named(known.get(formula, []), formula)
                                 if matcher.fit(s, new)), None)
                    if twin is not None:
                        rejected.append({"row": n_tried - 1, "id": gid,
                                         "error": f"matches known experimental structure {twin}"})
                        continue
            kept.append(({
                "id": gid, "formula": formula, "label": 0, "source": "generated",
                "prototype_id": ids[i], "prototype_formula": pool_formulas[i],
                "substitution": ",".join(f"{a}->{b}" for a, b in mapping.items()),
                "scaling": config.volume,
                "volume_factor": new.volume / sub.volume,
                "volume_per_atom": new.volume / len(new),
            }, new))
        for row, s in kept:
            row["cif"] = str(CifWriter(s))
            rows.append(row)
    columns = ["id", "formula", "cif", "label", "source", "prototype_id", "prototype_formula",
               "substitution", "scaling", "volume_factor", "volume_per_atom"]
    frame = pd.DataFrame(rows, columns=columns)
    table = CrystalTable.from_frame(frame, id_column="id", formula_column="formula", cif_column="cif")
    errors = pd.DataFrame(rejected, columns=["row", "id", "error"])
    return CrystalTable(table.frame, pd.concat([table.errors, errors], ignore_index=True), table._cache)
