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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ase import Atoms
from pymatgen.core import IStructure, Structure
from pymatgen.core.structure import IMolecule

from cosynth.io.errors import ParseProblem, describe_error, detail, diagnose_cif
from cosynth.io.shards import shard_of
from cosynth.io.validate import MAX_ATOMS, MAX_EXTENT, CrystalValidationError, validate_structure

__all__ = ["CrystalRecord", "TableRows", "count_inputs", "iter_crystals", "read_crystals", "table_chunks",
           "table_row_ids", "to_structure"]

STRUCTURE_COLUMNS = ("cif", "structure", "path", "file")
ID_COLUMNS = ("id", "material_id", "mp_id", "name")
FORMULA_COLUMNS = ("formula", "reduced_formula", "formula_pretty", "pretty_formula", "composition")
FORMULA_ONLY = "formula_only"  # status of a table row that has a formula and no structure
RESOLVE_MODES = ("error", "majority")

# Extensions (after stripping .gz) of files picked up when a folder is given. Tables
# are left out on purpose: a folder of CIFs often also holds a labels.csv.
_ASE_FOLDER_EXTS = {".extxyz", ".xyz", ".traj", ".xsf", ".cell", ".res", ".gen", ".pdb", ".cfg"}
_TABLE_KINDS = {"csv", "parquet", "jsonl"}
_MAX_MESSAGE = 400
#: Bytes (uncompressed) of one structure file or table cell; a larger one is an error row, not a
#: memory spike (a 10 MB .gz can hold gigabytes).
MAX_TEXT_BYTES = 64 << 20


@dataclass
class CrystalRecord:
    """One input crystal: a validated structure, or the reason there is none."""

    id: str
    structure: Structure | None
    status: str
    error: str | None
    source: str
    formula: str | None = None
    extra: dict = field(default_factory=dict)  # the input table's other columns, carried to the output
    # the CIF data block the crystal was parsed from (files or table cells), so the XIE-SPP
    # compatible imager can position it exactly as ase.io.read does (specs/voxel-image.md)
    cif: str | None = None

    @property
    def ok(self) -> bool:
        """A validated structure is present."""
        return self.status == "ok"

    @property
    def has_formula(self) -> bool:
        """A composition-only model can use this record (a structure's formula, or a formula-only row)."""
        return self.formula is not None and self.status in ("ok", FORMULA_ONLY)


@dataclass
class _Raw:
    """A parsed (not yet validated) crystal, or a parse error."""

    id: str
    source: str
    structure: Structure | None = None
    error: str | None = None
    formula: str | None = None
    extra: dict = field(default_factory=dict)
    formula_only: bool = False
    cif: str | None = None
    shard_key: str | None = None  # the id its shard is chosen by, when not ``id`` (every crystal of one file)


@dataclass
class TableRows:
    """Some rows of a table file, read as those rows of the file: the same ids, sources and
    relative structure paths as reading the whole file gives them. ``cosynth screen`` hands each
    task its share of a big table this way."""

    frame: pd.DataFrame  # the rows
    path: str  # the table file they were read from
    numbers: list[int]  # their 0-based row numbers in that file


# ----------------------------------------------------------------------------- public API


def iter_crystals(
    inputs: Any,
    *,
    id_column: str | None = None,
    structure_column: str | None = None,
    formula_column: str | None = None,
    resolve_disorder: str = "error",
    validate: bool = True,
    max_extent: float | None = MAX_EXTENT,
    recursive: bool = True,
    shard: tuple[int, int] | None = None,
) -> Iterator[CrystalRecord]:
    """Yield one record per crystal, lazily and in input order.

    ``inputs`` is one item or an iterable of items: a path to a file or folder, a
    glob pattern, a pymatgen ``Structure``, an ASE ``Atoms``, a ``Structure.as_dict()``
    dict, CIF text, or a pandas ``DataFrame``. Files are parsed only when the consumer
    reaches them, so a generator of thousands of paths streams.

    A table row with a formula and no structure becomes a record with status
    ``formula_only`` (composition models can use it); a table's other columns travel in
    ``record.extra``. Folders are searched with their subfolders; files in subfolders get
    their relative path as id (``sub/NaCl``). Every input gets a row: a path that does not
    exist, a broken symbolic link and an unreadable file become error records.

    Args:
        inputs: the items above, one or many.
        id_column, structure_column, formula_column: table columns to use (default: the
            first of :data:`ID_COLUMNS`, :data:`STRUCTURE_COLUMNS`, :data:`FORMULA_COLUMNS`).
        resolve_disorder: ``error`` rejects partially occupied sites, ``majority`` keeps the
            majority species.
        validate: run :func:`cosynth.io.validate.validate_structure` on each structure.
        max_extent: its image-box check (Å); None for models that do not image the crystal.
        recursive: search folders' subfolders too (False: the top level only).
        shard: ``(i, N)`` yields only the crystals of shard i of N (:func:`cosynth.io.shards.shard_of`
            of the id; all crystals of a multi-structure file go with the file's id). Files and
            table cells of other shards are not parsed. The N shards together are one unsharded run.

    Returns:
        An iterator of :class:`CrystalRecord`, one per crystal, in input order.
    """
    if resolve_disorder not in RESOLVE_MODES:
        raise ValueError(f"resolve_disorder must be one of {RESOLVE_MODES}, got {resolve_disorder!r}")
    if shard is not None and (shard[1] < 1 or not 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (i, N) with 0 <= i < N, got {shard!r}")
    opts = _Options(id_column, structure_column, formula_column, recursive, shard)
    checks = {"resolve_disorder": resolve_disorder, "max_extent": max_extent} if validate else None
    return _iter(inputs, opts, checks)


def count_inputs(inputs: Any, recursive: bool = True) -> int | None:
    """How many records :func:`iter_crystals` will yield, when that is cheap to know (structure
    files, folders of them, in-memory objects); None when it is not (tables, globs, multi-block
    files are counted as one each, so the count is a lower bound for those)."""
    total = 0
    for item in _as_items(inputs):
        if isinstance(item, (str, os.PathLike)) and not (isinstance(item, str) and _looks_like_cif_text(item)):
            path = Path(item)
            if path.is_dir():
                total += len(_folder_files(path, recursive))
            elif path.is_file() and _kind(path) in _TABLE_KINDS:
                return None
            elif not path.exists() and any(ch in str(item) for ch in "*?["):
                return None
            else:
                total += 1
        elif isinstance(item, pd.DataFrame):
            total += len(item)
        else:
            total += 1
    return total


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
    formula_column: str | None = None
    recursive: bool = True
    shard: tuple[int, int] | None = None

    def wants(self, key: str) -> bool:
        """The crystal (or file) with id ``key`` belongs to the requested shard."""
        return self.shard is None or shard_of(key, self.shard[1]) == self.shard[0]


def _iter(inputs: Any, opts: _Options, checks: dict | None) -> Iterator[CrystalRecord]:
    used: set[str] = set()
    for k, item in enumerate(_as_items(inputs)):
        for raw in _expand(item, k, opts):
            if opts.wants(raw.shard_key or raw.id):
                yield _finish(raw, used, checks)


def _as_items(inputs: Any) -> Iterable[Any]:
    """A single input is wrapped; Structures, Atoms and DataFrames are iterable but are one item."""
    if isinstance(inputs, (str, os.PathLike, IStructure, IMolecule, Atoms, pd.DataFrame, dict, TableRows)):
        return [inputs]
    try:
        return iter(inputs)
    except TypeError:
        return [inputs]


def _finish(raw: _Raw, used: set[str], checks: dict | None) -> CrystalRecord:
    """Validate a parsed crystal (``checks``: keywords of :func:`validate_structure`; None: do not)
    and give it an id no earlier record has."""
    with warnings.catch_warnings():
        # pymatgen's warnings here (electronegativity of noble gases while sorting a formula,
        # numerical ones on odd cells) say nothing about the crystal the user could act on
        warnings.simplefilter("ignore")
        return _finish_quietly(raw, used, checks)


def _finish_quietly(raw: _Raw, used: set[str], checks: dict | None) -> CrystalRecord:
    rid = _unique_id(raw.id, used)
    if raw.formula_only:
        return CrystalRecord(rid, None, FORMULA_ONLY, _clip(raw.error or "no structure"), raw.source, raw.formula,
                             raw.extra)
    if raw.error is not None or raw.structure is None:
        message = raw.error or "no structure"
        return CrystalRecord(rid, None, "error", _clip(message), raw.source, raw.formula, raw.extra)
    structure = raw.structure
    formula = _formula(structure)
    if checks is not None:
        try:
            structure = validate_structure(structure, **checks)
        except CrystalValidationError as exc:
            return CrystalRecord(rid, None, "error", _clip(str(exc)), raw.source, formula, raw.extra)
        except MemoryError as exc:
            message = f"out of memory while validating this crystal {detail(exc)}"
            return CrystalRecord(rid, None, "error", _clip(message), raw.source, formula, raw.extra)
        except Exception as exc:  # a pymatgen failure on odd data is still a data error
            message = f"the crystal could not be validated (its numbers break the distance check) {detail(exc)}"
            return CrystalRecord(rid, None, "error", _clip(message), raw.source, formula, raw.extra)
        formula = _formula(structure)
    return CrystalRecord(rid, structure, "ok", None, raw.source, formula, raw.extra, cif=raw.cif)


def _unique_id(base: str, used: set[str]) -> str:
    rid, n = base, 1
    while rid in used:
        n += 1
        rid = f"{base}~{n}"
    used.add(rid)
    return rid


def _expand(item: Any, k: int, opts: _Options) -> Iterator[_Raw]:
    if isinstance(item, str) and _looks_like_cif_text(item):
        yield from _cif_text_item(item, k)
    elif isinstance(item, (str, os.PathLike)):
        yield from _expand_path(os.fspath(item), opts)
    elif isinstance(item, pd.DataFrame):
        yield from _table_rows(item, f"table_{k}", f"<DataFrame #{k}>", Path.cwd(), opts)
    elif isinstance(item, TableRows):
        path = Path(item.path)
        yield from _table_rows(item.frame, _stem(path), item.path, path.parent, opts, item.numbers)
    elif isinstance(item, (IStructure, Atoms, dict, IMolecule)):
        kind = type(item).__name__
        rid = _object_id(item) or f"structure_{k}"
        yield _rename(_guarded(lambda: to_structure(item), kind), rid, f"<{kind} #{k}>")
    else:
        name = type(item).__name__
        yield _Raw(f"input_{k}", f"<{name} #{k}>", error=f"unsupported input type {name}")


def _looks_like_cif_text(text: str) -> bool:
    """CIF content given directly (not a path): several lines with a data block or cell tags."""
    return "\n" in text and ("data_" in text or "_cell_length_a" in text)


def _cif_text_item(text: str, k: int) -> Iterator[_Raw]:
    """The crystals of CIF text passed as an input; ids from the data block names."""
    source = f"<CIF text #{k}>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entries = _cif_entries(text if _split_cif_blocks(text) else "data_cell\n" + text)
    except Exception as exc:
        yield _Raw(f"cif_{k}", source, error=_explain(exc, "cif"))
        return
    names = re.findall(r"^\s*data_(\S*)", text, re.M) or [""]
    for j, entry in enumerate(entries):
        name = names[j] if j < len(names) and names[j] and names[j] != "cell" else f"cif_{k}"
        yield _rename(entry, name if len(entries) == 1 or name != f"cif_{k}" else f"{name}#{j}",
                      source if len(entries) == 1 else f"{source}#{j}")


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
    if _is_broken_link(path):
        yield _broken_link(path)
    elif path.is_dir():
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
    files = _folder_files(folder, opts.recursive)
    if not files:
        where = " or its subfolders" if opts.recursive else ""
        yield _Raw(folder.name or str(folder), str(folder), error=f"folder {folder}{where} holds no crystal files")
    for rel, path in files:
        # sub/NaCl, sub/two_blocks#1: ids stay unique and say where the file is
        yield from _read_file(path, opts, rel.parent.as_posix() + "/" if len(rel.parts) > 1 else "")


def _folder_files(folder: Path, recursive: bool) -> list[tuple[Path, Path]]:
    """(path relative to ``folder``, path) of the crystal files, sorted; hidden entries skipped.

    Symbolic links to folders are followed once (a link cycle is not walked twice); broken
    links with a crystal file name are kept so that they become error records.
    """
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()

    def walk(current: Path) -> None:
        try:
            real = os.path.realpath(current)
            if real in seen:
                return
            seen.add(real)
            entries = sorted(current.iterdir(), key=lambda p: p.name)
        except OSError:
            return
        for p in entries:
            if p.name.startswith("."):
                continue
            if _is_broken_link(p):
                if _is_crystal_file(p):
                    found.append((p.relative_to(folder), p))
            elif p.is_dir():
                if recursive:
                    walk(p)
            elif p.is_file() and _is_crystal_file(p):
                found.append((p.relative_to(folder), p))

    walk(folder)
    return sorted(found, key=lambda item: item[0].as_posix())


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _broken_link(path: Path) -> _Raw:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return _Raw(_stem(path), str(path), error=f"broken link: {path} points to missing {target}")


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


def _read_file(path: Path, opts: _Options, prefix: str = "") -> Iterator[_Raw]:
    """The crystals of one file; ids are ``prefix`` + the file's stem (+ ``#k`` for several)."""
    stem, source = prefix + _stem(path), str(path)
    if _is_broken_link(path):
        yield _rename(_broken_link(path), stem, source)
        return
    kind = _kind(path)
    if kind in _TABLE_KINDS:
        yield from _read_table_file(path, kind, opts)
        return
    if not opts.wants(stem):
        return
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
            raw = _rename(entry, f"{stem}#{k}", f"{source}#{k}")
            raw.shard_key = stem
            yield raw


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
            size = path.stat().st_size
            if size > MAX_TEXT_BYTES:
                raise ParseProblem(f"file too large: {size} bytes (limit {MAX_TEXT_BYTES})")
            frames = _read_ase(path)
            return [_guarded(lambda a=a: _atoms_to_structure(a), "ase") for a in frames]
        text = _read_text(path)
        if kind == "cif":
            return _cif_entries(text)
        if kind == "poscar":
            return [_guarded(lambda: _parse_poscar(text), "poscar", text)]
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
        return [_guarded(lambda d=d: _dict_structure(d), "json") for d in items]


def _read_text(path: Path, limit: int | None = -1) -> str:
    """The file's text, at most ``limit`` bytes uncompressed (-1: :data:`MAX_TEXT_BYTES`, None: no
    limit); a larger file raises ParseProblem."""
    limit = MAX_TEXT_BYTES if limit == -1 else limit
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ParseProblem(f"file too large: more than {limit} bytes of text (limit {limit})")
    # errors="replace": author names in CIF headers are often Latin-1.
    return data.decode("utf-8", errors="replace")


def _read_ase(path: Path) -> list[Atoms]:
    import ase.io

    frames = ase.io.read(str(path), index=":")
    return list(frames) if isinstance(frames, list) else [frames]


def _guarded(make: Any, label: str, text: str | None = None) -> _Raw:
    """Run a parser for one crystal; an exception becomes an error record (id set later)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = make()
        except Exception as exc:
            return _Raw("", "", error=_explain(exc, label, caught, text))
    if len(structure) > MAX_ATOMS:
        return _Raw("", "", error=f"too many atoms: {len(structure)} in the cell (limit {MAX_ATOMS})")
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


#: Atom sites × symmetry operations pymatgen may expand for one CIF block. Its duplicate search is
#: quadratic (4,000 sites: 8 s, 20,000: 130 s); crystals that fit the 50 Å image have < 15,000 atoms.
_MAX_CIF_EXPANSION = 30_000
_SYMOP_LINE = re.compile(r"^\s*(?:\d+\s+)?['\"]?[-+xyz0-9/. ]*,[-+xyz0-9/. ]*,[-+xyz0-9/. ]*['\"]?\s*$", re.I | re.M)


def _cif_size_problem(block: str) -> str | None:
    """A CIF block too big for pymatgen's symmetry expansion, estimated from its lines alone."""
    lines = block.count("\n") + 1
    ops = max(1, len(_SYMOP_LINE.findall(block)))
    if lines * ops > _MAX_CIF_EXPANSION:
        return (f"CIF too large: up to {lines} atom sites × {ops} symmetry operations "
                f"(limit {_MAX_CIF_EXPANSION} sites after symmetry)")
    return None


def _cell_value_ok(key: str, value: Any) -> bool:
    try:
        number = float(re.sub(r"\(\d*\)$", "", str(value[0] if isinstance(value, list) else value).strip()))
    except (ValueError, IndexError):
        return False
    if key.startswith("_cell_length"):
        return 0 < number < math.inf
    return 0 < number < 180


def _cif_block(block: str) -> _Raw:
    """Parse one CIF data block, turning pymatgen's warnings into a specific message."""
    from pymatgen.io.cif import CifParser

    too_big = _cif_size_problem(block)
    if too_big:
        return _Raw("", "", error=too_big)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # frac_tolerance=0: keep coordinates as written (pymatgen would otherwise snap
            # e.g. 0.6667 to 2/3, moving atoms by ~1e-4 Å and changing voxel images)
            parser = CifParser.from_str(block, frac_tolerance=0.0)
            data = {key.lower(): value for values in parser.as_dict().values() for key, value in values.items()}
            keys = set(data)
            missing = [key for key in _CELL_KEYS if key not in keys]
            if missing:
                return _Raw("", "", error=f"incomplete cell: the CIF has no {', '.join(missing)}")
            if not all(_cell_value_ok(key, data[key]) for key in _CELL_KEYS):
                # pymatgen accepts a negative length or a 200° angle; the file is damaged
                found = diagnose_cif(block)
                if found:
                    return _Raw("", "", error=found)
            if not any(key in keys for key in ("_atom_site_fract_x", "_atom_site_cartn_x")):
                return _Raw("", "", error="no atoms (CIF block has no atom sites)")
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            return _Raw("", "", error=_explain(exc, "cif", caught, block))
    if len(structures) != 1:
        found = diagnose_cif(block)
        return _Raw("", "", error=found or f"CIF parse failed: block gave {len(structures)} structures")
    if len(structures[0]) > MAX_ATOMS:
        return _Raw("", "", error=f"too many atoms: {len(structures[0])} in the cell (limit {MAX_ATOMS})")
    return _Raw("", "", structure=structures[0], cif=block)


def _parse_poscar(text: str) -> Structure:
    from pymatgen.io.vasp import Poscar

    lines = [line.split() for line in text.splitlines()]
    # Without a species line (VASP 4) pymatgen silently makes every atom hydrogen.
    if len(lines) > 5 and lines[5] and all(tok.isdigit() for tok in lines[5]):
        raise _ParseError("POSCAR parse failed: no element symbols line (VASP 4 format); add the species line")
    # pymatgen reads as many coordinate lines as the counts line says: a count of 1e9 must not allocate
    if len(lines) > 6 and all(tok.isdigit() for tok in lines[6]) and lines[6]:
        n_atoms = sum(int(tok) for tok in lines[6])
        if n_atoms > MAX_ATOMS:
            raise _ParseError(f"too many atoms: POSCAR line 7 says {n_atoms} (limit {MAX_ATOMS})")
        if n_atoms > len(lines):
            raise _ParseError(f"the POSCAR is truncated: {len(lines)} lines for {n_atoms} atoms")
    return Poscar.from_str(text, read_velocities=False).structure


def _dict_structure(data: Any) -> Structure:
    if not isinstance(data, dict):
        raise _ParseError(f"JSON parse failed: expected a Structure.as_dict() object, got {type(data).__name__}")
    sites = data.get("sites")
    if isinstance(sites, list) and len(sites) > MAX_ATOMS:  # before pymatgen builds a million Site objects
        raise _ParseError(f"too many atoms: {len(sites)} sites in the JSON (limit {MAX_ATOMS})")
    return to_structure(data)


def _atoms_to_structure(atoms: Atoms) -> Structure:
    """Periodic ASE Atoms to Structure; molecules have no crystal to image."""
    from pymatgen.io.ase import AseAtomsAdaptor

    if not all(atoms.pbc) or abs(atoms.cell.volume) < 1e-6:
        pbc = [bool(p) for p in atoms.pbc]
        raise ValueError(f"no periodic cell (pbc={pbc}, cell volume {abs(atoms.cell.volume):.3g} Å³)")
    return AseAtomsAdaptor.get_structure(atoms)


_ParseError = ParseProblem  # a parse failure whose message is already final


_BAD_ELEMENT = re.compile(r"'([^']*)' is not a valid Element")


def _explain(exc: Exception, label: str, caught: list | None = None, source_text: str | None = None) -> str:
    """A message that says which problem it is (:func:`describe_error`), pymatgen's warnings in the detail."""
    if isinstance(exc, _ParseError):
        return str(exc)
    label = _LABEL.get(label, label)
    text = str(exc).strip().strip("'\"") or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or text}"
    if type(exc).__name__ == "UnknownFileTypeError" and text.startswith("Empty file"):
        return "the file is empty"
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
    kind = next((k for k, v in _LABEL.items() if v == label), label)
    message = describe_error(exc, kind, text=source_text)
    notes = [str(w.message).strip() for w in (caught or []) if str(w.message).strip()]
    notes = [n for n in dict.fromkeys(notes) if "default value of primitive" not in n]
    if notes and message.endswith(")"):
        message = message[:-1] + "; warnings: " + " | ".join(n.replace("\n", " ") for n in notes) + ")"
    return message


# ----------------------------------------------------------------------------- tables


def _read_table_file(path: Path, kind: str, opts: _Options) -> Iterator[_Raw]:
    try:
        table = _load_table(path, kind)
    except Exception as exc:
        yield _Raw(_stem(path), str(path), error=_table_error(exc, _LABEL[kind]))
        return
    yield from _table_rows(table, _stem(path), str(path), path.parent, opts)


def _table_error(exc: Exception, label: str) -> str:
    """A table that cannot be read at all, in words (pandas' tokenizer says which line)."""
    text = str(exc)
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        expected, line, saw = fields.groups()
        return (f"{label} table line {line} has {saw} fields, expected {expected} (a quote or comma is off) "
                f"{detail(exc)}")
    if type(exc).__name__ == "EmptyDataError":
        return f"{label} table is empty {detail(exc)}"
    if isinstance(exc, UnicodeDecodeError):
        return f"{label} table is not text (bytes that are not UTF-8) {detail(exc)}"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or text}"
    if text == "no valid JSON object line":
        return f"{label} table has no valid JSON object line"
    return f"{label} table could not be read {detail(exc)}"


def _load_table(path: Path, kind: str) -> pd.DataFrame:
    if kind == "csv":
        # keep_default_na=False: the formula "NaN" is sodium nitride, not a missing value.
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    if kind == "parquet":
        return pd.read_parquet(path)
    rows = []
    for n, line in enumerate(_read_text(path, limit=None).splitlines(), start=1):
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


def _table_columns(table: pd.DataFrame, source: str, opts: _Options) -> tuple[str | None, str | None, str | None]:
    """The (structure, formula, id) columns of a table: the ones asked for, else the first known name."""
    columns = [str(c) for c in table.columns if str(c) != "__error__"]
    scol = _pick(columns, opts.structure_column, STRUCTURE_COLUMNS, "structure", source)
    fcol = _pick(columns, opts.formula_column, FORMULA_COLUMNS, "formula", source)
    if scol is None and fcol is None:
        raise ValueError(
            f"table {source} has no structure column (looked for {list(STRUCTURE_COLUMNS)}) and no formula column "
            f"(looked for {list(FORMULA_COLUMNS)}); its columns are {columns}; pass structure_column=..."
        )
    return scol, fcol, _pick(columns, opts.id_column, ID_COLUMNS, "id", source)


def table_row_ids(table: pd.DataFrame, path: str, numbers: Iterable[int], *, id_column: str | None = None,
                  structure_column: str | None = None, formula_column: str | None = None) -> list[str]:
    """The ids :func:`iter_crystals` gives rows ``numbers`` of the table file ``path`` (before
    duplicates get a ``~2`` suffix), without parsing a structure; a usage error raises ValueError."""
    opts = _Options(id_column, structure_column, formula_column)
    _, _, icol = _table_columns(table.rename(columns=str), path, opts)
    ids = table[icol].tolist() if icol else [None] * len(table)
    stem = _stem(Path(path))
    return [_row_id(rid, stem, i) for rid, i in zip(ids, numbers, strict=True)]


def _row_id(value: Any, stem: str, number: int) -> str:
    """A table row's id: its id cell, else ``table-stem:row-number``."""
    return _cell_text(value) or f"{stem}:{number}"


def table_chunks(path: str | os.PathLike, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first row number, frame) of consecutive chunks of at most ``rows`` rows of a CSV or Parquet
    table, read as :func:`iter_crystals` reads it (CSV cells as text, "NaN" a formula), so memory
    stays bounded for tables of millions of crystals; JSON lines tables come whole. Raises what
    the reader raises for a table that cannot be read."""
    path = Path(path)
    kind = _kind(path)
    if kind == "csv":
        chunks = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str, chunksize=rows)
    elif kind == "parquet":
        import pyarrow.parquet as pq

        chunks = (batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=rows))
    else:
        chunks = iter([_load_table(path, kind)])
    start = 0
    for frame in chunks:
        yield start, frame.reset_index(drop=True)
        start += len(frame)


def _table_rows(table: pd.DataFrame, stem: str, source: str, base: Path, opts: _Options,
                numbers: list[int] | None = None) -> Iterator[_Raw]:
    """One crystal per row; the structure and id columns are chosen once per table. ``numbers``:
    the rows' numbers in the file they came from (default 0, 1, …)."""
    columns = [str(c) for c in table.columns if str(c) != "__error__"]
    table = table.rename(columns=str)
    scol, fcol, icol = _table_columns(table, source, opts)
    n = len(table)
    numbers = range(n) if numbers is None else numbers
    cells = table[scol].tolist() if scol else [None] * n
    formulas = [_cell_text(f) for f in table[fcol].tolist()] if fcol else [None] * n
    ids = table[icol].tolist() if icol else [None] * n
    errors = table["__error__"].tolist() if "__error__" in table.columns else [None] * n
    kept = [c for c in columns if c not in (scol, icol, fcol)]
    extras = table[kept].to_dict("records") if kept else [{} for _ in range(n)]
    for i, cell, rid, err, formula, extra in zip(numbers, cells, ids, errors, formulas, extras, strict=True):
        row_id = _row_id(rid, stem, i)
        if not opts.wants(row_id):
            continue
        row_source = f"{source}:row {i}"
        if isinstance(err, str):
            raw = _Raw(row_id, row_source, error=err)
        elif formula is not None and _cell_text(cell) is None:
            why = f"empty structure cell in column {scol!r}" if scol else "no structure column in the table"
            raw = _Raw(row_id, row_source, error=why, formula_only=True)
        else:
            raw = _rename(_parse_cell(cell, scol, base), row_id, row_source)
        raw.formula = formula if formula is not None else raw.formula
        raw.extra = extra
        yield raw


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
        return _Raw("", "", error=f"cell in column {column!r} holds {len(entries)} structures; "
                    "a row must hold one crystal")
    return entries[0]


def _formula(structure: Structure) -> str | None:
    try:
        return structure.composition.reduced_formula or None
    except Exception:
        return None


def _clip(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
