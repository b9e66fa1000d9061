"""Load structures from any OPTIMADE database into a CrystalTable.

One client for Materials Project, COD, Alexandria, OQMD, … : the `optimade` package's
``OptimadeClient`` does the HTTP, paging and retries; this module turns each returned entry
into a row. The conversion reads the standard OPTIMADE fields directly (lattice_vectors,
cartesian_site_positions, species_at_sites, species) so that one odd entry (a molecule, an
unknown species, a missing field) becomes an error row instead of failing the whole page.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["load_optimade", "entries_to_table", "entry_to_structure"]

RESPONSE_FIELDS = ["lattice_vectors", "cartesian_site_positions", "species_at_sites", "species",
                   "chemical_formula_reduced", "dimension_types", "nperiodic_dimensions", "immutable_id",
                   "structure_features"]


def entry_to_structure(attributes: dict):
    """pymatgen Structure from an OPTIMADE structure entry's attributes; ValueError says why not."""
    from pymatgen.core import Lattice, Structure

    dims = attributes.get("dimension_types")
    if dims is not None and list(dims) != [1, 1, 1]:
        raise ValueError(f"not a 3D periodic crystal (dimension_types={list(dims)})")
    lattice = attributes.get("lattice_vectors")
    positions = attributes.get("cartesian_site_positions")
    names = attributes.get("species_at_sites")
    if lattice is None or positions is None or names is None:
        missing = [k for k in ("lattice_vectors", "cartesian_site_positions", "species_at_sites")
                   if attributes.get(k) is None]
        raise ValueError(f"entry lacks {', '.join(missing)}")
    if any(v is None for row in lattice for v in row):
        raise ValueError("lattice_vectors contain null values")
    species = {s["name"]: s for s in attributes.get("species") or []}
    site_species = []
    for name in names:
        spec = species.get(name)
        if spec is None:  # no species list: the name is the element
            site_species.append({name: 1.0})
            continue
        occ = {}
        for symbol, conc in zip(spec["chemical_symbols"], spec["concentration"]):
            if symbol == "vacancy":
                continue
            if symbol == "X":
                raise ValueError(f"species {name!r} is an unknown element ('X')")
            occ[symbol] = occ.get(symbol, 0.0) + float(conc)
        if not occ:
            raise ValueError(f"species {name!r} has no element")
        site_species.append(occ)
    return Structure(Lattice(np.asarray(lattice, dtype=float)), site_species, np.asarray(positions, dtype=float),
                     coords_are_cartesian=True)


def entries_to_table(entries: Iterable[dict], *, source: str = "optimade"):
    """CrystalTable of OPTIMADE structure entries (``{"id", "attributes": {...}}`` dicts)."""
    from cosynth.data.table import CrystalTable, structure_to_cif

    ids, formulas, cifs, extra, errors = [], [], [], [], []
    for k, entry in enumerate(entries):
        attrs = entry.get("attributes") or {}
        rid = str(entry.get("id") or attrs.get("immutable_id") or f"{source}:{k}")
        try:
            structure = entry_to_structure(attrs)
            cif = structure_to_cif(structure)
        except Exception as exc:
            errors.append({"row": k, "id": rid, "error": " ".join(str(exc).split()) or type(exc).__name__})
            continue
        ids.append(rid)
        formulas.append(attrs.get("chemical_formula_reduced"))
        cifs.append(cif)
        extra.append({"structure_features": ",".join(attrs.get("structure_features") or []) or None,
                      "provider_url": entry.get("_provider_url")})
    frame = pd.DataFrame({"id": ids, "formula": formulas, "cif": cifs, **pd.DataFrame(extra, columns=[
        "structure_features", "provider_url"]).to_dict("list")})
    # formulas from the structure where the provider gives none (or an OPTIMADE-style one)
    frame["formula"] = [None if f is None or (isinstance(f, float) and math.isnan(f)) else f for f in frame["formula"]]
    table = CrystalTable.from_frame(frame, id_column="id", formula_column="formula", cif_column="cif")
    table.frame["source"] = source
    bad = pd.DataFrame(errors, columns=["row", "id", "error"])
    return CrystalTable(table.frame, pd.concat([table.errors, bad], ignore_index=True), table._cache)


def load_optimade(base_url: str | list[str], filter: str = "", *, max_results: int = 100,
                  timeout: float = 30.0, source: str | None = None):
    """Structures matching an OPTIMADE ``filter`` from one or more base URLs.

    Entries that are not 3D crystals or cannot be converted are in ``errors``.

    Args:
        base_url: a database's OPTIMADE base URL (e.g. https://optimade.materialsproject.org), or a list.
        filter: the OPTIMADE filter; empty for all entries.
        max_results: at most this many entries per provider and in total.
        timeout: HTTP timeout in seconds.
        source: the ``source`` column's value (default "optimade").

    Returns:
        A CrystalTable of the entries.

    Raises:
        RuntimeError: a server cannot be reached or refuses the filter (with its message), when no provider
            returned entries.
    """
    from optimade.client import OptimadeClient

    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    client = OptimadeClient(base_urls=urls, max_results_per_provider=max_results, use_async=False, silent=True,
                            http_timeout=timeout, max_attempts=2)
    try:
        results = client.get(filter or None, response_fields=RESPONSE_FIELDS)
    except Exception as exc:
        raise RuntimeError(f"OPTIMADE query failed: {type(exc).__name__}: {exc}") from None
    entries, problems = [], []
    for url, result in results.get("structures", {}).get(filter or "", {}).items():
        if result.get("errors"):
            problems.append(f"{url}: {'; '.join(map(str, result['errors']))}")
        for entry in result.get("data", []):
            entries.append({**entry, "_provider_url": url})
    if problems and not entries:
        raise RuntimeError("OPTIMADE query failed: " + " | ".join(problems))
    return entries_to_table(entries[:max_results] if max_results else entries, source=source or "optimade")
