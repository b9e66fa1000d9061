"""Read crystals from files, folders, globs, tables and in-memory objects.

Bad input is data: every crystal yields exactly one :class:`CrystalRecord`, and a
crystal that cannot be read or fails validation becomes a record with
``status="error"`` and a message naming the specific problem, so one broken file
never stops a batch of thousands. Only usage errors (a table without a structure
column, an unknown option) raise.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ase import Atoms
from pymatgen.core import IStructure, Structure
from pymatgen.core.structure import IMolecule

from cosynth.io.validate import CrystalValidationError, validate_structure

__all__ = ["CrystalRecord", "iter_crystals", "read_crystals", "to_structure"]

STRUCTURE_COLUMNS = ("cif", "structure", "path", "file")
ID_COLUMNS = ("id", "material_id", "mp_id", "name")
RESOLVE_MODES = ("error", "majority")

# Extensions (after stripping .gz) of files picked up when a folder is given. Tables
# are left out on purpose: a folder of CIFs often also holds a labels.csv.
_ASE_FOLDER_EXTS = {".extxyz", ".xyz", ".traj", ".xsf", ".cell", ".res", ".gen", ".pdb", ".cfg"}
_TABLE_KINDS = {"csv", "parquet", "jsonl"}
_MAX_MESSAGE = 400


@dataclass
class CrystalRecord:
    """One input crystal: a validated structure, or the reason there is none."""

    id: str
    structure: Structure | None
    status: str
    error: str | None
    source: str
    formula: str | None = None
    # the CIF data block the crystal was parsed from (files or table cells), so the XIE-SPP
    # compatible imager can position it exactly as ase.io.read does (specs/voxel-image.md)
    cif: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Raw:
    """A parsed (not yet validated) crystal, or a parse error."""

    id: str
    source: str
    structure: Structure | None = None
    error: str | None = None
    formula: str | None = None
    cif: str | None = None


# ----------------------------------------------------------------------------- public API


def iter_crystals(
    inputs: Any,
    *,
    id_column: str | None = None,
    structure_column: str | None = None,
    resolve_disorder: str = "error",
    validate: bool = True,
) -> Iterator[CrystalRecord]:
    """Yield one record per crystal, lazily and in input order.

    ``inputs`` is one item or an iterable of items: a path to a file or folder, a
    glob pattern, a pymatgen ``Structure``, an ASE ``Atoms``, a ``Structure.as_dict()``
    dict or a pandas ``DataFrame``. Files are parsed only when the consumer reaches
    them, so a generator of thousands of paths streams.
    """
    if resolve_disorder not in RESOLVE_MODES:
        raise ValueError(f"resolve_disorder must be one of {RESOLVE_MODES}, got {resolve_disorder!r}")
    opts = _Options(id_column, structure_column)
    return _iter(inputs, opts, resolve_disorder, validate)


def read_crystals(inputs: Any, **kw: Any) -> list[CrystalRecord]:
    """All records of :func:`iter_crystals` as a list."""
    return list(iter_crystals(inputs, **kw))


def to_structure(obj: Any) -> Structure:
    """Convert a pymatgen Structure, ASE Atoms or ``Structure.as_dict()`` dict to a Structure.

    Raises ``ValueError`` for objects without a 3D periodic cell (molecules) and
    ``TypeError`` for anything else.
    """
    if isinstance(obj, Structure):
        return obj.copy()
    if isinstance(obj, IStructure):
        return Structure.from_sites(obj.sites, properties=dict(obj.properties))
    if isinstance(obj, IMolecule):
        raise ValueError("no periodic cell (pymatgen Molecule)")
    if isinstance(obj, Atoms):
        return _atoms_to_structure(obj)
    if isinstance(obj, dict):
        if "lattice" not in obj:
            raise ValueError("no periodic cell (dict has no 'lattice'; expected Structure.as_dict())")
        return Structure.from_dict(obj)
    raise TypeError(
        f"cannot convert {type(obj).__name__} to a Structure; expected a pymatgen Structure, "
        "an ASE Atoms or a Structure.as_dict() dict"
    )


# ----------------------------------------------------------------------------- driver


@dataclass
class _Options:
    id_column: str | None
    structure_column: str | None


def _iter(inputs: Any, opts: _Options, resolve_disorder: str, validate: bool) -> Iterator[CrystalRecord]:
    used: set[str] = set()
    for k, item in enumerate(_as_items(inputs)):
        for raw in _expand(item, k, opts):
            yield _finish(raw, used, resolve_disorder, validate)


def _as_items(inputs: Any) -> Iterable[Any]:
    """A single input is wrapped; Structures, Atoms and DataFrames are iterable but are one item."""
    if isinstance(inputs, (str, os.PathLike, IStructure, IMolecule, Atoms, pd.DataFrame, dict)):
        return [inputs]
    try:
        return iter(inputs)
    except TypeError:
        return [inputs]


def _finish(raw: _Raw, used: set[str], resolve_disorder: str, validate: bool) -> CrystalRecord:
    """Validate a parsed crystal and give it an id no earlier record has."""
    rid = _unique_id(raw.id, used)
    if raw.error is not None or raw.structure is None:
        message = raw.error or "no structure"
        return CrystalRecord(rid, None, "error", _clip(message), raw.source, raw.formula)
    structure = raw.structure
    formula = _formula(structure)
    if validate:
        try:
            structure = validate_structure(structure, resolve_disorder=resolve_disorder)
        except CrystalValidationError as exc:
            return CrystalRecord(rid, None, "error", _clip(str(exc)), raw.source, formula)
        except Exception as exc:  # a pymatgen failure on odd data is still a data error
            message = f"validation failed: {type(exc).__name__}: {exc}"
            return CrystalRecord(rid, None, "error", _clip(message), raw.source, formula)
        formula = _formula(structure)
    return CrystalRecord(rid, structure, "ok", None, raw.source, formula, cif=raw.cif)


def _unique_id(base: str, used: set[str]) -> str:
    rid, n = base, 1
    while rid in used:
        n += 1
        rid = f"{base}~{n}"
    used.add(rid)
    return rid


def _expand(item: Any, k: int, opts: _Options) -> Iterator[_Raw]:
    if isinstance(item, (str, os.PathLike)):
        yield from _expand_path(os.fspath(item), opts)
    elif isinstance(item, pd.DataFrame):
        yield from _table_rows(item, f"table_{k}", f"<DataFrame #{k}>", Path.cwd(), opts)
    elif isinstance(item, (IStructure, Atoms, dict, IMolecule)):
        kind = type(item).__name__
        rid = _object_id(item) or f"structure_{k}"
        yield _rename(_guarded(lambda: to_structure(item), kind), rid, f"<{kind} #{k}>")
    else:
        name = type(item).__name__
        yield _Raw(f"input_{k}", f"<{name} #{k}>", error=f"unsupported input type {name}")


def _object_id(obj: Any) -> str | None:
    """An id the user attached to an in-memory object, if any."""
    if isinstance(obj, IStructure):
        meta = obj.properties or {}
    elif isinstance(obj, Atoms):
        meta = obj.info or {}
    elif isinstance(obj, dict):
        meta = obj.get("properties") or {}
    else:
        return None
    for key in ("id", "material_id"):
        value = _cell_text(meta.get(key))
        if value:
            return value
    return None


# ----------------------------------------------------------------------------- paths


def _expand_path(text: str, opts: _Options) -> Iterator[_Raw]:
    path = Path(text)
    if path.is_dir():
        yield from _expand_folder(path, opts)
    elif path.exists():
        yield from _read_file(path, opts)
    elif any(ch in text for ch in "*?["):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            yield _Raw(text, text, error=f"no files match pattern {text!r}")
        for match in matches:
            m = Path(match)
            yield from (_expand_folder(m, opts) if m.is_dir() else _read_file(m, opts))
    else:
        yield _Raw(_stem(path), text, error=f"file not found: {text}")


def _expand_folder(folder: Path, opts: _Options) -> Iterator[_Raw]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_crystal_file(p))
    if not files:
        yield _Raw(folder.name or str(folder), str(folder), error=f"folder {folder} holds no crystal files")
    for path in files:
        yield from _read_file(path, opts)


def _is_crystal_file(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    kind = _kind(path)
    return kind in ("cif", "poscar", "json") or (kind == "ase" and _ext(path) in _ASE_FOLDER_EXTS)


def _ext(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem or name


def _kind(path: Path) -> str:
    """File kind from the extension (case-insensitive), then from VASP file names."""
    ext = _ext(path)
    name = path.name.lower()
    if ext in (".cif", ".mcif"):
        return "cif"
    if ext in (".vasp", ".poscar"):
        return "poscar"
    if ext == ".json":
        return "json"
    if ext == ".csv":
        return "csv"
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if name.startswith(("poscar", "contcar")):
        return "poscar"
    return "ase"


def _read_file(path: Path, opts: _Options) -> Iterator[_Raw]:
    kind = _kind(path)
    if kind in _TABLE_KINDS:
        yield from _read_table_file(path, kind, opts)
        return
    stem, source = _stem(path), str(path)
    try:
        entries = _load_entries(path, kind)
    except Exception as exc:
        yield _Raw(stem, source, error=_explain(exc, kind))
        return
    if not entries:
        yield _Raw(stem, source, error=f"{_LABEL[kind]} parse failed: no structures found in file")
    elif len(entries) == 1:
        yield _rename(entries[0], stem, source)
    else:
        for k, entry in enumerate(entries):
            yield _rename(entry, f"{stem}#{k}", f"{source}#{k}")


def _rename(raw: _Raw, rid: str, source: str) -> _Raw:
    raw.id, raw.source = rid, source
    return raw


_LABEL = {
    "cif": "CIF",
    "poscar": "POSCAR",
    "json": "JSON",
    "ase": "ASE",
    "file": "file",
    "csv": "CSV",
    "parquet": "Parquet",
    "jsonl": "JSON lines",
}


def _load_entries(path: Path, kind: str) -> list[_Raw]:
    """All crystals of one structure file; raises for a file-level failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "ase":
            frames = _read_ase(path)
            return [_guarded(lambda a=a: _atoms_to_structure(a), "ase") for a in frames]
        text = _read_text(path)
        if kind == "cif":
            return _cif_entries(text)
        if kind == "poscar":
            return [_guarded(lambda: _parse_poscar(text), "poscar")]
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
        return [_guarded(lambda d=d: _dict_structure(d), "json") for d in items]


def _read_text(path: Path) -> str:
    # errors="replace": author names in CIF headers are often Latin-1.
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    return path.read_text(encoding="utf-8", errors="replace")


def _read_ase(path: Path) -> list[Atoms]:
    import ase.io

    frames = ase.io.read(str(path), index=":")
    return list(frames) if isinstance(frames, list) else [frames]


def _guarded(make: Any, label: str) -> _Raw:
    """Run a parser for one crystal; an exception becomes an error record (id set later)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = make()
        except Exception as exc:
            return _Raw("", "", error=_explain(exc, label, caught))
    return _Raw("", "", structure=structure)


# ----------------------------------------------------------------------------- formats


def _split_cif_blocks(text: str) -> list[str]:
    """Split CIF text at ``data_`` headers (outside ;-delimited text fields)."""
    blocks: list[list[str]] = []
    in_field = False
    for line in text.splitlines():
        if line.startswith(";"):
            in_field = not in_field
        elif not in_field and line.lstrip().lower().startswith("data_"):
            blocks.append([])
        if blocks:
            blocks[-1].append(line)
    return ["\n".join(b) + "\n" for b in blocks]


_CELL_KEYS = (
    *(f"_cell_length_{x}" for x in "abc"),
    *(f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")),
)


def _cif_entries(text: str) -> list[_Raw]:
    blocks = _split_cif_blocks(text)
    if not blocks:
        raise _ParseError("CIF parse failed: no data_ block found")
    return [_cif_block(block) for block in blocks]


def _cif_block(block: str) -> _Raw:
    """Parse one CIF data block, turning pymatgen's warnings into a specific message."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # frac_tolerance=0: keep coordinates as written (pymatgen would otherwise snap
            # e.g. 0.6667 to 2/3, moving atoms by ~1e-4 Å and changing voxel images)
            parser = CifParser.from_str(block, frac_tolerance=0.0)
            keys = {key.lower() for values in parser.as_dict().values() for key in values}
            missing = [key for key in _CELL_KEYS if key not in keys]
            if missing:
                return _Raw("", "", error=f"CIF parse failed: incomplete cell, missing {', '.join(missing)}")
            if not any(key in keys for key in ("_atom_site_fract_x", "_atom_site_cartn_x")):
                return _Raw("", "", error="no atoms (CIF block has no atom sites)")
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            return _Raw("", "", error=_explain(exc, "cif", caught))
    if len(structures) != 1:
        return _Raw("", "", error=f"CIF parse failed: block gave {len(structures)} structures")
    return _Raw("", "", structure=structures[0], cif=block)


def _parse_poscar(text: str) -> Structure:
    from pymatgen.io.vasp import Poscar

    lines = [line.split() for line in text.splitlines()]
    # Without a species line (VASP 4) pymatgen silently makes every atom hydrogen.
    if len(lines) > 5 and lines[5] and all(tok.isdigit() for tok in lines[5]):
        raise _ParseError("POSCAR parse failed: no element symbols line (VASP 4 format); add the species line")
    return Poscar.from_str(text, read_velocities=False).structure


def _dict_structure(data: Any) -> Structure:
    if not isinstance(data, dict):
        raise _ParseError(f"JSON parse failed: expected a Structure.as_dict() object, got {type(data).__name__}")
    return to_structure(data)


def _atoms_to_structure(atoms: Atoms) -> Structure:
    """Periodic ASE Atoms to Structure; molecules have no crystal to image."""
    from pymatgen.io.ase import AseAtomsAdaptor

    if not all(atoms.pbc) or abs(atoms.cell.volume) < 1e-6:
        pbc = [bool(p) for p in atoms.pbc]
        raise ValueError(f"no periodic cell (pbc={pbc}, cell volume {abs(atoms.cell.volume):.3g} Å³)")
    return AseAtomsAdaptor.get_structure(atoms)


class _ParseError(ValueError):
    """A parse failure whose message is already final."""


_BAD_ELEMENT = re.compile(r"'([^']*)' is not a valid Element")


def _explain(exc: Exception, label: str, caught: list | None = None) -> str:
    """A message that says which problem it is, with pymatgen's warnings when useful."""
    if isinstance(exc, _ParseError):
        return str(exc)
    label = _LABEL.get(label, label)
    text = str(exc).strip().strip("'\"") or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or text}"
    if type(exc).__name__ == "UnknownFileTypeError":
        return f"unsupported file type ({text}); use CIF, POSCAR, pymatgen JSON, extxyz or a table"
    if isinstance(exc, json.JSONDecodeError):
        return f"JSON parse failed: {exc}"
    if text.startswith("no periodic cell"):
        return text
    found = _BAD_ELEMENT.search(str(exc))
    if found:
        return f"unknown element {found.group(1)!r} ({label} parse)"
    if isinstance(exc, KeyError) and label == "ASE" and re.fullmatch(r"[A-Z][a-z]{0,2}", text):
        return f"unknown element {text!r} (ASE parse)"
    if "at least 1 site" in text:
        return "no atoms"
    message = f"{label} parse failed: {type(exc).__name__}: {text}"
    notes = [str(w.message).strip() for w in (caught or []) if str(w.message).strip()]
    notes = [n for n in dict.fromkeys(notes) if "default value of primitive" not in n]
    if notes:
        message += " [warnings: " + " | ".join(n.replace("\n", " ") for n in notes) + "]"
    return message


# ----------------------------------------------------------------------------- tables


def _read_table_file(path: Path, kind: str, opts: _Options) -> Iterator[_Raw]:
    try:
        table = _load_table(path, kind)
    except Exception as exc:
        yield _Raw(_stem(path), str(path), error=f"{_LABEL[kind]} table read failed: {type(exc).__name__}: {exc}")
        return
    yield from _table_rows(table, _stem(path), str(path), path.parent, opts)


def _load_table(path: Path, kind: str) -> pd.DataFrame:
    if kind == "csv":
        # keep_default_na=False: the formula "NaN" is sodium nitride, not a missing value.
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    if kind == "parquet":
        return pd.read_parquet(path)
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                rows.append({"__error__": f"JSON lines parse failed on line {n}: {exc}"})
    if not any("__error__" not in row for row in rows):
        raise ValueError("no valid JSON object line")
    return pd.DataFrame.from_records(rows)


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, source: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"table {source} has no {what} column {wanted!r}; its columns are {columns}")
        return wanted
    return next((c for c in candidates if c in columns), None)


def _table_rows(table: pd.DataFrame, stem: str, source: str, base: Path, opts: _Options) -> Iterator[_Raw]:
    """One crystal per row; the structure and id columns are chosen once per table."""
    columns = [str(c) for c in table.columns if str(c) != "__error__"]
    table = table.rename(columns=str)
    scol = _pick(columns, opts.structure_column, STRUCTURE_COLUMNS, "structure", source)
    if scol is None:
        raise ValueError(
            f"table {source} has no structure column (looked for {list(STRUCTURE_COLUMNS)}); "
            f"its columns are {columns}; pass structure_column=..."
        )
    icol = _pick(columns, opts.id_column, ID_COLUMNS, "id", source)
    cells = table[scol].tolist()
    ids = table[icol].tolist() if icol else [None] * len(cells)
    errors = table["__error__"].tolist() if "__error__" in table.columns else [None] * len(cells)
    for i, (cell, rid, err) in enumerate(zip(cells, ids, errors)):
        row_id = _cell_text(rid) or f"{stem}:{i}"
        row_source = f"{source}:row {i}"
        if isinstance(err, str):
            yield _Raw(row_id, row_source, error=err)
        else:
            yield _rename(_parse_cell(cell, scol, base), row_id, row_source)


def _cell_text(value: Any) -> str | None:
    """Cell value as an id string; None for empty cells (so the row-index id is used)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _parse_cell(cell: Any, column: str, base: Path) -> _Raw:
    """A table cell: CIF text, pymatgen JSON text, a path, or an in-memory object."""
    if isinstance(cell, (IStructure, Atoms, dict, IMolecule)):
        return _guarded(lambda: to_structure(cell), type(cell).__name__)
    if cell is None or cell is pd.NA or (isinstance(cell, float) and math.isnan(cell)):
        return _Raw("", "", error=f"empty structure cell in column {column!r}")
    if not isinstance(cell, str):
        return _Raw("", "", error=f"unsupported value of type {type(cell).__name__} in column {column!r}")
    text = cell.strip()
    if not text:
        return _Raw("", "", error=f"empty structure cell in column {column!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if text.startswith(("{", "[")):
                return _guarded(lambda: _dict_structure(json.loads(text)), "json")
            if "data_" in text or "_cell_length_a" in text:
                if not _split_cif_blocks(text):
                    text = "data_cell\n" + text
                entries = _cif_entries(text)
            elif "\n" in text:
                return _Raw("", "", error=f"unrecognised structure text in column {column!r} (not CIF, JSON or a path)")
            else:
                path = Path(text).expanduser()
                path = path if path.is_absolute() else base / path
                if _kind(path) in _TABLE_KINDS:
                    return _Raw("", "", error=f"path {text!r} points to a table, not a structure file")
                entries = _load_entries(path, _kind(path))
        except Exception as exc:
            return _Raw("", "", error=_explain(exc, "cif" if "data_" in text else "file", caught))
    if len(entries) != 1:
        return _Raw("", "", error=f"cell in column {column!r} holds {len(entries)} structures; a row must hold one crystal")
    return entries[0]


def _formula(structure: Structure) -> str | None:
    try:
        return structure.composition.reduced_formula or None
    except Exception:
        return None


def _clip(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
