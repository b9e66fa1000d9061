"""Materials Project through its API client (`mp-api`), with the ICSD/theoretical flag as label.

`mp-api` is an optional dependency (``pip install cosynth[public]``) imported only here, when
called. The conversion from MP summary documents to a CrystalTable is separate
(:func:`docs_to_table`) so it works on any document-like objects (mp-api returns pydantic
models; plain dicts work too).
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

__all__ = ["load_materials_project", "docs_to_table", "MP_FIELDS"]

MP_FIELDS = ["material_id", "formula_pretty", "structure", "theoretical", "energy_above_hull",
             "formation_energy_per_atom", "band_gap", "database_IDs"]
INSTALL_HINT = "the Materials Project loader needs mp-api: pip install cosynth[public]"


def _get(doc: Any, key: str, default=None):
    if isinstance(doc, dict):
        return doc.get(key, default)
    return getattr(doc, key, default)


def docs_to_table(docs: Iterable[Any], *, source: str = "materials_project"):
    """CrystalTable of MP summary documents: label 1 = has an ICSD entry (not theoretical), 0 = theoretical.

    Uses ``theoretical`` (MP's own flag, false when the material has an ICSD id) and keeps the
    ICSD ids (``database_IDs["icsd"]``) for provenance.
    """
    from cosynth.data.table import CrystalTable

    rows = []
    for doc in docs:
        theoretical = _get(doc, "theoretical")
        ids = _get(doc, "database_IDs") or {}
        icsd = ids.get("icsd") if isinstance(ids, dict) else None
        rows.append({
            "id": str(_get(doc, "material_id")),
            "formula": _get(doc, "formula_pretty"),
            "structure": _get(doc, "structure"),
            "label": None if theoretical is None else int(not theoretical),
            "icsd_ids": ",".join(str(i) for i in icsd) if icsd else None,
            "energy_above_hull": _get(doc, "energy_above_hull"),
            "formation_energy_per_atom": _get(doc, "formation_energy_per_atom"),
            "band_gap": _get(doc, "band_gap"),
        })
    frame = pd.DataFrame(rows, columns=["id", "formula", "structure", "label", "icsd_ids", "energy_above_hull",
                                        "formation_energy_per_atom", "band_gap"])
    frame["label"] = frame["label"].astype("Int64")
    table = CrystalTable.from_frame(frame, id_column="id", formula_column="formula", cif_column="structure")
    table.frame["source"] = source
    return table


def load_materials_project(*, formulas: list[str] | None = None, chemsys: list[str] | None = None,
                           material_ids: list[str] | None = None, theoretical: bool | None = None,
                           api_key: str | None = None, max_results: int | None = None):
    """MP materials by formula, chemical system or id, through the Materials Project API (``mp_api``).

    Args:
        formulas, chemsys, material_ids: query filters; those given are combined.
        theoretical: True for theoretical entries only, False for ICSD-tagged only, None for both.
        api_key: the MP API key (from MP_API_KEY if not given).
        max_results: keep at most this many materials (one chunk of that size), or None for all.

    Returns:
        A CrystalTable of the materials (see :func:`docs_to_table`).

    Raises:
        ImportError: ``mp_api`` is not installed.
    """
    try:
        from mp_api.client import MPRester
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    query: dict[str, Any] = {"fields": MP_FIELDS}
    if formulas:
        query["formula"] = formulas
    if chemsys:
        query["chemsys"] = chemsys
    if material_ids:
        query["material_ids"] = material_ids
    if theoretical is not None:
        query["theoretical"] = theoretical
    if max_results:
        query["num_chunks"] = 1
        query["chunk_size"] = max_results
    with MPRester(api_key) as mpr:
        docs = mpr.materials.summary.search(**query)
    return docs_to_table(docs[:max_results] if max_results else docs)
