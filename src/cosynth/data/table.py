"""CrystalTable: one table format for crystals whose structure is optional.

Every dataset of cosynth (loaded, built or generated) is a CrystalTable: a pandas frame with
one row per entry, an ``id`` and a reduced ``formula`` always, CIF text in ``cif`` when the
entry has a structure, and any labels, targets or metadata as further columns. Composition-only
rows are first-class, so COSNet-style data (structure for some rows only) needs no other type.

Validation happens once, on load, and never raises for a bad row: a CIF that does not parse,
an unknown element or an unparsable formula sends that row to ``errors`` with a message that
says what is wrong, and the rest loads. Structures are kept as parsed (disordered sites
allowed); models that need ordered, well-spaced crystals apply
:func:`cosynth.io.validate_structure` themselves.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition, IStructure, Structure

from cosynth.io import files as io_files
from cosynth.io.crystals import _cif_entries, _explain, to_structure
from cosynth.io.validate import CrystalValidationError, _check_elements

__all__ = ["CrystalTable", "read_table", "normalize_formula", "structure_to_cif"]

ID_COLUMNS = ("id", "material_id", "mp_id", "task_id", "entry_id", "ID", "name")
FORMULA_COLUMNS = ("formula", "reduced_formula", "formula_pretty", "pretty_formula", "composition",
                   "chemical_formula_reduced", "Reduced Composition", "full_formula")
CIF_COLUMNS = ("cif", "structure", "CIF")
ERROR_COLUMNS = ["row", "id", "error"]


def normalize_formula(text: Any) -> str:
    """pymatgen reduced formula of a formula string; ``ValueError`` with the reason otherwise.

    "NaN" is sodium nitride: only None/NaN floats count as missing.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)) or text is pd.NA:
        raise ValueError("missing formula")
    raw = str(text).strip()
    if not raw:
        raise ValueError("empty formula")
    try:
        comp = Composition(raw)
    except Exception as exc:
        raise ValueError(f"unparsable formula {raw!r}: {exc}") from None
    bad = [el.symbol for el in comp.elements if not getattr(el, "Z", 0) or type(el).__name__ == "DummySpecies"]
    if bad or not comp.valid:
        raise ValueError(f"unknown element {', '.join(bad) or '?'} in formula {raw!r}")
    if comp.num_atoms <= 0:
        raise ValueError(f"formula {raw!r} has no atoms")
    return comp.reduced_formula


def structure_to_cif(structure: Structure) -> str:
    """CIF text of a structure (P1, coordinates as stored), the column format of the table."""
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure))


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _id_text(value: Any) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip() or None


def _parse_cif(text: str) -> Structure:
    """One structure from CIF text via the repo's CIF reader; ``ValueError`` says why not."""
    entries = _cif_entries(text if "data_" in text else "data_cell\n" + text)
    if len(entries) != 1:
        raise ValueError(f"CIF holds {len(entries)} structures; a row must hold one crystal")
    raw = entries[0]
    if raw.error is not None or raw.structure is None:
        raise ValueError(raw.error or "CIF parse failed: no structure")
    try:
        _check_elements(raw.structure)
    except CrystalValidationError as exc:
        raise ValueError(str(exc)) from None
    return raw.structure


def _structure_formula(structure: Structure) -> str:
    return structure.composition.reduced_formula


class CrystalTable:
    """One row per crystal: ``id``, ``formula`` (always), ``cif`` (optional), anything else kept.

    Use :meth:`read` / :meth:`from_frame` to build one (they validate); the constructor
    trusts its input.
    """

    def __init__(self, frame: pd.DataFrame, errors: pd.DataFrame | None = None,
                 _cache: dict[str, Structure | None] | None = None):
        self.frame = frame.reset_index(drop=True)
        self.errors = errors if errors is not None else pd.DataFrame(columns=ERROR_COLUMNS)
        self._cache: dict[str, Structure | None] = _cache if _cache is not None else {}

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def read(cls, path, *, id_column: str | None = None, formula_column: str | None = None,
             cif_column: str | None = None, parse: bool = True) -> "CrystalTable":
        """Read .parquet, .csv, .csv.gz or .jsonl and validate every row (see module doc).

        Args:
            path: the table file.
            id_column, formula_column, cif_column: the columns to use; None detects them (:meth:`from_frame`).
            parse: parse the CIFs now (see :meth:`from_frame`).

        Returns:
            The table; refused rows are in ``errors``.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a named column is missing, or the table has neither a formula nor a structure column.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"table not found: {path}")
        df = _read_frame(path, (id_column, formula_column, cif_column))
        return cls.from_frame(df, id_column=id_column, formula_column=formula_column,
                              cif_column=cif_column, parse=parse)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, id_column: str | None = None, formula_column: str | None = None,
                   cif_column: str | None = None, parse: bool = True) -> "CrystalTable":
        """Validate a frame into a table. Columns are auto-detected unless named.

        A row is refused (sent to ``errors``) for a duplicate id, an unparsable formula or CIF, or neither a
        formula nor a structure; without a formula, it comes from the structure. Without an id column, ids are
        the row positions. Other columns are kept.

        Args:
            df: the input frame.
            id_column, formula_column, cif_column: the columns to use; None looks for the usual names
                (:data:`ID_COLUMNS`, :data:`FORMULA_COLUMNS`, :data:`CIF_COLUMNS`). The structure column may hold
                CIF text or pymatgen/ASE objects (stored back as CIF).
            parse: ``False`` skips parsing CIFs now (faster; bad CIFs then surface in :meth:`structures`
                as None) — formulas are still checked.

        Returns:
            The table with ``id``, ``formula``, ``cif`` (when there is a structure column) and the other columns.

        Raises:
            ValueError: a named column is missing, or there is neither a formula nor a structure column.
        """
        df = df.rename(columns=str)
        cols = list(df.columns)
        icol = _pick(cols, id_column, ID_COLUMNS, "id")
        fcol = _pick(cols, formula_column, FORMULA_COLUMNS, "formula")
        scol = _pick(cols, cif_column, CIF_COLUMNS, "structure")
        if fcol is None and scol is None:
            raise ValueError(f"table has neither a formula column (looked for {list(FORMULA_COLUMNS)}) nor a "
                             f"structure column (looked for {list(CIF_COLUMNS)}); its columns are {cols}")
        n = len(df)
        raw_ids = df[icol].tolist() if icol else list(range(n))
        raw_formulas = df[fcol].tolist() if fcol else [None] * n
        raw_cifs = df[scol].tolist() if scol else [None] * n

        ids: list[str] = []
        formulas: list[str] = []
        cifs: list[str | None] = []
        keep: list[int] = []
        errors: list[dict] = []
        cache: dict[str, Structure | None] = {}
        seen: dict[str, int] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen chatter (e.g. no electronegativity for Ne)
            for i, (rid, formula, cell) in enumerate(zip(raw_ids, raw_formulas, raw_cifs)):
                row_id = _id_text(rid) or str(i)
                if row_id in seen:
                    errors.append({"row": i, "id": row_id,
                                   "error": f"duplicate id {row_id!r} (first at row {seen[row_id]})"})
                    continue
                try:
                    norm, structure, cif = _validate_row(formula, cell, fcol, scol, parse)
                except Exception as exc:  # one bad row never stops the table
                    message = " ".join(str(exc).split()) or type(exc).__name__
                    errors.append({"row": i, "id": row_id, "error": message})
                    continue
                seen[row_id] = i
                ids.append(row_id)
                formulas.append(norm)
                cifs.append(cif)
                keep.append(i)
                if structure is not None:
                    cache[row_id] = structure

        rest = df.iloc[keep].drop(columns=[c for c in (icol, fcol, scol) if c], errors="ignore")
        rest = rest.drop(columns=[c for c in ("id", "formula", "cif") if c in rest.columns])
        out = pd.DataFrame({"id": pd.array(ids, dtype=object), "formula": pd.array(formulas, dtype=object)})
        if scol is not None:
            out["cif"] = pd.array(cifs, dtype=object)
        out = pd.concat([out, rest.reset_index(drop=True)], axis=1)
        err = pd.DataFrame(errors, columns=ERROR_COLUMNS)
        return cls(out, err, cache)

    @classmethod
    def from_structures(cls, structures: Iterable[Any], ids: Iterable[str] | None = None,
                        **columns: Iterable[Any]) -> "CrystalTable":
        """Table from in-memory structures (pymatgen, ASE, dicts) plus optional columns.

        Args:
            structures: the structures.
            ids: one id per structure (default: "0", "1", …).
            **columns: further columns, one value per structure; ``formula`` is used as the formula column.

        Returns:
            The validated table (:meth:`from_frame`).
        """
        structures = list(structures)
        frame = pd.DataFrame({"id": list(ids) if ids is not None else [str(i) for i in range(len(structures))],
                              "structure": structures, **{k: list(v) for k, v in columns.items()}})
        return cls.from_frame(frame, id_column="id", cif_column="structure",
                              formula_column="formula" if "formula" in columns else None)

    # ---- access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        n_struct = int(self.has_structure().sum()) if len(self) else 0
        return f"CrystalTable({len(self)} rows, {n_struct} with structure, {len(self.errors)} refused)"

    def has_structure(self) -> np.ndarray:
        """Bool per row: the row has CIF text.

        Returns:
            A boolean array (all False without a ``cif`` column).
        """
        if "cif" not in self.frame.columns:
            return np.zeros(len(self.frame), dtype=bool)
        return np.array([not _missing(c) for c in self.frame["cif"]], dtype=bool)

    def structures(self) -> list[Structure | None]:
        """pymatgen Structure or None per row; each CIF is parsed once and cached by id.

        Returns:
            One Structure per row; None where there is no CIF or it does not parse.
        """
        if "cif" not in self.frame.columns:
            return [None] * len(self.frame)
        out: list[Structure | None] = []
        for rid, cif in zip(self.frame["id"], self.frame["cif"]):
            if rid not in self._cache:
                try:
                    self._cache[rid] = None if _missing(cif) else _parse_cif(cif)
                except Exception:
                    self._cache[rid] = None
            out.append(self._cache[rid])
        return out

    def subset(self, rows) -> "CrystalTable":
        """Rows selected by a boolean mask or positions; shares the parsed-structure cache.

        Args:
            rows: a boolean mask or row positions.

        Returns:
            The new table (with the same ``errors``).
        """
        rows = np.asarray(rows)
        frame = self.frame[rows] if rows.dtype == bool else self.frame.iloc[rows]
        return CrystalTable(frame, self.errors, self._cache)

    def with_frame(self, frame: pd.DataFrame) -> "CrystalTable":
        """The same table with a new frame (e.g. added columns); the cache is shared.

        Args:
            frame: the new frame.

        Returns:
            The new table (with the same ``errors``).
        """
        return CrystalTable(frame, self.errors, self._cache)

    # ---- output -----------------------------------------------------------------------------
    def write(self, path) -> None:
        """Write the frame atomically (temp file + rename); format from the extension. ``errors`` is not written.

        Args:
            path: the file (.parquet, .csv, .csv.gz, .json or .jsonl).
        """
        io_files.write_table(self.frame, path)


def read_table(path, **kw) -> CrystalTable:
    """Same as :meth:`CrystalTable.read`."""
    return CrystalTable.read(path, **kw)


# ---- helpers ----------------------------------------------------------------------------------
def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"no {what} column {wanted!r}; the columns are {columns}")
        return wanted
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in columns:
            return cand
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def _validate_row(formula: Any, cell: Any, fcol: str | None, scol: str | None, parse: bool):
    """(reduced formula, structure or None, CIF text or None) of one row; raises with the reason."""
    structure, cif = _structure_cell(cell, scol, parse)
    if not _missing(formula):
        return normalize_formula(formula), structure, cif
    if structure is None and cif is not None:  # parse=False: the formula must come from the CIF
        structure = _parse_cif(cif)
    if structure is not None:
        return _structure_formula(structure), structure, cif
    what = f"formula column {fcol!r}" if fcol else "formula column"
    raise ValueError(f"no formula ({what} empty) and no structure")


def _structure_cell(cell: Any, column: str | None, parse: bool) -> tuple[Structure | None, str | None]:
    """(structure or None, CIF text or None) of one structure cell."""
    if isinstance(cell, (Structure, IStructure, dict)) or type(cell).__name__ == "Atoms":
        structure = to_structure(cell)
        _check_elements(structure)
        return structure, structure_to_cif(structure)
    if _missing(cell):
        return None, None
    if not isinstance(cell, str):
        raise ValueError(f"unsupported value of type {type(cell).__name__} in column {column!r}")
    text = cell.strip()
    if not parse:
        return None, text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _parse_cif(text), text
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(_explain(exc, "cif")) from None


def _read_frame(path: Path, named: tuple[str | None, ...]) -> pd.DataFrame:
    # read_table keeps only the names the file has; other formats carry their own types
    text = tuple(c for c in (*named, *ID_COLUMNS, *FORMULA_COLUMNS, *CIF_COLUMNS) if c)
    return io_files.read_table(path, text_columns=text)
