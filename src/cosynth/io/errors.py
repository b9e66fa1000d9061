"""Error messages in words: what is wrong with an input, naming the CIF tag or file line.

Parsers (pymatgen's CIF and POSCAR readers, ASE) fail with messages written for their
developers ("integer modulo by zero", "len(items)=77 is not a multiple of n=9"). The
readers in :mod:`cosynth.io.crystals` turn every failure into a message with
:func:`describe_error`; the parser's own text is kept only as a trailing
``(detail: Type: text)``. :func:`diagnose_cif` and :func:`diagnose_poscar` find the first
concrete problem of a file that failed to parse; :func:`is_bare` says whether a message
is still a bare Python exception (used by the fuzz test to keep that share small).
"""

from __future__ import annotations

import math
import re

__all__ = ["ParseProblem", "describe_error", "diagnose_cif", "diagnose_poscar", "is_bare"]

_DETAIL_MAX = 160
_CELL_TAGS = (
    *(f"_cell_length_{x}" for x in "abc"),
    *(f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")),
)
_SYMOP_TAGS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz", "_space_group_symop.operation_xyz")
_TOKEN = re.compile(r"""([^'"\s][\S]*)|'(.*?)'(?!\S)|"(.*?)"(?!\S)""")
_LABELS = {"cif": "CIF", "poscar": "POSCAR", "json": "JSON", "ase": "extxyz/ASE file", "file": "file"}

#: Words that only specific messages use; a message without any of them is "bare".
VOCABULARY = (
    "not a number", "is truncated", "no atoms", "unknown element", "has no ", "is empty", "cell length",
    "cell angle", "Å apart", "atoms span", "disordered", "non-finite", "degenerate cell", "too many atoms",
    "too large", "file not found", "broken link", "is not valid", "is not text", "not whole numbers",
    "not a whole number", "NaN or infinite", "infinite or too large", "a NaN value", "POSCAR line", "table line",
    "atom site", "occupancies", "no periodic cell", "unsupported", "no structures", "no data_ block", "must be",
    "out of memory", "beyond the", "symmetry operation", "no files match", "holds no crystal files",
    "element symbols", "is flat", "incomplete cell", "empty structure cell", "differ:", "should say Direct",
    "not three numbers", "JSON parse failed", "a row must hold one crystal", "points to a table",
    "unrecognised structure text", "could not be validated", "do not form a cell", "rows with different numbers",
    "table is empty", "closer than", "atom count line", "fewer values than", "file is empty",
)
_BARE_START = re.compile(r"^\s*[\w.]*(Error|Exception|Warning)\b")


class ParseProblem(ValueError):
    """A parse failure whose message is already in words (raised by the diagnoses)."""


def is_bare(message: str | None) -> bool:
    """True for a message that is a Python exception rather than a description of the input.

    Bare: it starts with an exception class name, or the part before ``(detail: …)``
    holds none of the words of :data:`VOCABULARY`.
    """
    if not message:
        return True
    head = message.split("(detail:")[0]
    if _BARE_START.match(head) or re.search(r"parse failed: \w+(Error|Exception)\b", head):
        return True
    return not any(word.lower() in head.lower() for word in VOCABULARY)


def detail(exc: BaseException) -> str:
    """``(detail: Type: text)``, clipped: the parser's words, for whoever debugs the parser."""
    text = " ".join(str(exc).split()).strip("'\"")
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 3] + "..."
    return f"(detail: {type(exc).__name__}: {text})" if text else f"(detail: {type(exc).__name__})"


def describe_error(exc: BaseException, context: str = "file", text: str | None = None) -> str:
    """A plain message for an exception raised while reading one crystal.

    Unknown exceptions keep their text as a trailing detail.

    Args:
        exc: the exception.
        context: the input kind ("cif", "poscar", "json", "ase", "file").
        text: the input's text when there is one, so the first concrete problem in it can be named
            (a CIF tag, a POSCAR line); only used for cif and poscar.

    Returns:
        The message.
    """
    if isinstance(exc, ParseProblem):
        return str(exc)
    label = _LABELS.get(context, context)
    if isinstance(exc, MemoryError):
        return f"out of memory while reading this {label} (input too large) {detail(exc)}"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"{label} is not text (bytes that are not UTF-8) {detail(exc)}"
    found = None
    if text is not None:
        try:
            if context == "cif":
                found = diagnose_cif(text)
            elif context == "poscar":
                found = diagnose_poscar(text)
        except Exception:  # noqa: BLE001 - a diagnosis that fails must not hide the original error
            found = None
    if found:
        return f"{found} {detail(exc)}"
    return f"{_phrase(exc, label)} {detail(exc)}"


_BAD_ELEMENT = re.compile(r"'([^']*)' is not a valid Element")


def _phrase(exc: BaseException, label: str) -> str:
    """Words for an exception when the input itself could not be diagnosed."""
    raw = str(exc)
    low = raw.lower()
    bad = _BAD_ELEMENT.search(raw)
    if bad:
        return f"unknown element {bad.group(1)!r} ({label})"
    if "expected xyz header" in low:
        return f"the {label} does not start with an atom count line (xyz header)"
    if "could not assign tuple of length" in low:
        return f"the {label} has a line with fewer values than its columns (the file is truncated or a line is cut)"
    if "could not convert string to float" in low:
        value = raw.split(":", 1)[-1].strip()
        return f"the {label} has a value that is not a number ({_clip(value)})"
    if "invalid literal for int()" in low:
        return f"the {label} has a count that is not a whole number ({_clip(raw.split(':', 1)[-1].strip())})"
    if "is not a multiple of" in low or "zip() argument" in low or "modulo by zero" in low or "division" in low:
        return f"a list in the {label} is truncated (its values do not fill whole rows)"
    if "thickness" in low and "below threshold" in low:
        values = [float(v) for v in re.findall(r"float64\(([-+0-9.eE]+)\)", raw)] or [0.0]
        return f"the {label}'s cell is flat: {min(values):.3g} Å thick (check the cell lengths and angles)"
    if "singular matrix" in low:
        return f"the {label}'s cell is degenerate (its vectors are coplanar; check the cell angles)"
    if "nan" in low and ("integer" in low or "convert" in low):
        return f"the {label} has a NaN value"
    if "infinity" in low or isinstance(exc, OverflowError):
        return f"the {label} has an infinite or too large value"
    if "occupancy" in low and "tolerance" in low:
        return f"the {label}'s site occupancies exceed 1 (atoms on one position add up to more than a full site)"
    if "at least 1 site" in low or "no structures" in low:
        return "no atoms"
    if "inhomogeneous" in low:
        return f"the {label} has rows with different numbers of values (a line is cut or merged)"
    if isinstance(exc, (IndexError, StopIteration, EOFError)):
        return f"the {label} is truncated (it ends before all expected lines)"
    if isinstance(exc, KeyError):
        key = raw.strip("'\"")
        if key.startswith("_"):
            return f"the {label} has no {key} (a required tag is missing)"
        if re.fullmatch(r"[A-Z][a-z]{0,2}", key):
            return f"unknown element {key!r} ({label})"
        return f"the {label} is missing the entry {key!r}"
    if "cannot parse coordinates" in low:
        return f"the {label} has a coordinate line that is not three numbers"
    return f"the {label} could not be read (the parser failed)"


def _clip(value: str, n: int = 40) -> str:
    value = " ".join(value.split()).strip("'\"")
    return repr(value if len(value) <= n else value[: n - 3] + "...")


# ----------------------------------------------------------------------------- CIF


def _number(value: str) -> float | None:
    """A CIF number ('1.234(5)' → 1.234); None if it is not one."""
    value = value.strip()
    value = re.sub(r"\(\d*\)$", "", value)
    try:
        return float(value)
    except ValueError:
        return None


def _cif_tokens(block: str) -> list[tuple[str, int]]:
    """(token, line number) of a CIF block, with comments removed and ;-fields as one token."""
    out: list[tuple[str, int]] = []
    field: list[str] | None = None
    start = 0
    for n, line in enumerate(block.splitlines(), start=1):
        if field is not None:
            if line.startswith(";"):
                out.append((" ".join(field), start))
                field = None
                line = line[1:]
            else:
                field.append(line)
                continue
        if line.startswith(";"):
            field, start = [line[1:].strip()], n
            continue
        line = re.sub(r"(\s|^)#.*$", "", line)
        for m in _TOKEN.finditer(line):
            out.append((next(g for g in m.groups() if g is not None), n))
    if field is not None:
        out.append((" ".join(field), start))
    return out


def _cif_structure(block: str) -> tuple[dict[str, tuple[str, int]], list[tuple[list[str], list[str], int]]]:
    """Scalar tags {tag: (value, line)} and loops [(columns, values, line of loop_)], as pymatgen reads them."""
    tokens = _cif_tokens(block)
    scalars: dict[str, tuple[str, int]] = {}
    loops: list[tuple[list[str], list[str], int]] = []
    i = 0
    while i < len(tokens):
        tok, line = tokens[i]
        low = tok.lower()
        if low.startswith("loop_"):
            cols, vals, i = [], [], i + 1
            while i < len(tokens) and tokens[i][0].startswith("_") and not tokens[i][0].lower().startswith("loop_"):
                cols.append(tokens[i][0].lower())
                i += 1
            while i < len(tokens) and not tokens[i][0].startswith("_") and not tokens[i][0].lower().startswith(
                ("loop_", "data_")
            ):
                vals.append(tokens[i][0])
                i += 1
            loops.append((cols, vals, line))
            continue
        if tok.startswith("_"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and not nxt[0].startswith("_") and not nxt[0].lower().startswith("loop_"):
                scalars[low] = (nxt[0], line)
                i += 2
                continue
            scalars[low] = ("", line)
        i += 1
    return scalars, loops


def _loop_name(cols: list[str]) -> str:
    if not cols:
        return "loop"
    if cols[0].startswith("_atom_site_aniso"):
        return "anisotropic displacement list"
    if cols[0].startswith("_atom_site"):
        return "atom site list"
    if any(c in _SYMOP_TAGS for c in cols):
        return "symmetry operation list"
    return f"loop of {cols[0]}"


def diagnose_cif(block: str) -> str | None:
    """The first concrete problem of a CIF data block, in words; None if none is found.

    Checks, in order: loops (no tags, values that do not fill rows), the six cell tags
    (missing, not a number, NaN/infinite, out of range), atom sites (missing coordinate
    columns, coordinates or occupancies that are not numbers, unknown elements) and
    symmetry operations.
    """
    scalars, loops = _cif_structure(block)
    for cols, vals, line in loops:
        if not cols:
            return f"a loop_ (line {line}) has no _tags"
        if len(vals) % len(cols):
            return (f"{_loop_name(cols)} is truncated: {len(vals)} values do not fill rows of {len(cols)} columns "
                    f"(loop_ on line {line})")
        if not vals:
            return f"{_loop_name(cols)} is empty (loop_ on line {line} has tags but no values)"
    columns = {c: (cols, vals) for cols, vals, _ in loops for c in cols}
    for tag in _CELL_TAGS:
        if tag in scalars:
            raw, line = scalars[tag]
        elif tag in columns:
            raw, line = (columns[tag][1] or [""])[0], 0
        else:
            return f"the CIF has no {tag}"
        where = f" (line {line})" if line else ""
        value = _number(raw)
        if raw in ("", "?", "."):
            return f"the CIF's {tag} is empty{where}"
        if value is None:
            return f"the CIF's {tag} is not a number ({_clip(raw)}){where}"
        if not math.isfinite(value):
            return f"the CIF's {tag} is {raw} (NaN or infinite){where}"
        if tag.startswith("_cell_length") and value <= 0:
            return f"the CIF's {tag} is {raw} (a cell length must be positive){where}"
        if tag.startswith("_cell_angle") and not 0 < value < 180:
            return f"the CIF's {tag} is {raw} (a cell angle must be between 0 and 180 degrees){where}"
    angles = [_number(scalars.get(t, ("90", 0))[0]) or 90.0 for t in _CELL_TAGS[3:]]
    a, b, c = (math.radians(x) for x in angles)
    if a + b + c >= 2 * math.pi or a + b <= c or a + c <= b or b + c <= a:
        return f"the CIF's cell angles {angles[0]:g}, {angles[1]:g}, {angles[2]:g} do not form a cell"
    site = next(((cols, vals) for cols, vals, _ in loops if any(c.startswith("_atom_site_fract") or
                                                                 c.startswith("_atom_site_cartn") for c in cols)), None)
    if site is None:
        return "no atoms (the CIF has no _atom_site_fract_x/y/z list)"
    cols, vals = site
    prefix = "_atom_site_fract_" if any(c.startswith("_atom_site_fract") for c in cols) else "_atom_site_cartn_"
    for axis in "xyz":
        if prefix + axis not in cols:
            return f"the CIF's atom site list has no {prefix + axis} column"
    rows = [vals[k : k + len(cols)] for k in range(0, len(vals), len(cols))]
    label_col = cols.index("_atom_site_label") if "_atom_site_label" in cols else None
    for r, row in enumerate(rows, start=1):
        name = f"atom site {r}" + (f" ({row[label_col]!r})" if label_col is not None else "")
        for tag in (prefix + "x", prefix + "y", prefix + "z", "_atom_site_occupancy"):
            if tag not in cols:
                continue
            raw = row[cols.index(tag)]
            value = _number(raw)
            if value is None and not (tag == "_atom_site_occupancy" and raw in ("?", ".")):
                return f"{name}: the CIF's {tag} is not a number ({_clip(raw)})"
            if value is not None and not math.isfinite(value):
                return f"{name}: the CIF's {tag} is {raw} (NaN or infinite)"
            if tag == "_atom_site_occupancy" and value is not None and not 0 < value <= 1.001:
                return f"{name}: the CIF's _atom_site_occupancy is {raw} (an occupancy must be in (0, 1])"
        symbol_col = cols.index("_atom_site_type_symbol") if "_atom_site_type_symbol" in cols else label_col
        if symbol_col is not None and not _element_of(row[symbol_col]):
            tag = cols[symbol_col]
            return f"unknown element {row[symbol_col]!r} ({name}, {tag})"
    for tag in _SYMOP_TAGS:
        if tag in columns:
            ops = columns[tag][1]
        elif tag in scalars:
            ops = [scalars[tag][0]]
        else:
            continue
        for k, op in enumerate(ops, start=1):
            if not _valid_symop(op):
                return f"symmetry operation {k} ({_clip(op)}) in {tag} is not valid (expected e.g. 'x, -y, z+1/2')"
    return None


def _element_of(symbol: str) -> bool:
    """Whether a CIF type symbol or label starts with an element symbol, as pymatgen reads it."""
    from pymatgen.core import Element

    m = re.match(r"([A-Za-z]{1,2})", symbol.strip())
    if not m:
        return False
    letters = m.group(1)
    for cand in (letters[:2].capitalize(), letters[:1].upper()):
        if Element.is_valid_symbol(cand) and cand not in ("D", "T"):
            return True
    return False


def _valid_symop(op: str) -> bool:
    parts = op.replace(" ", "").lower().split(",")
    return len(parts) == 3 and all(p and re.fullmatch(r"[-+xyz0-9./*]+", p) and re.search(r"[xyz]", p) for p in parts)


# ----------------------------------------------------------------------------- POSCAR


def diagnose_poscar(text: str) -> str | None:
    """The first concrete problem of a POSCAR, naming its line; None if none is found."""
    from pymatgen.core import Element

    lines = text.splitlines()
    if len(lines) < 8:
        return f"the POSCAR is truncated: {len(lines)} lines (a POSCAR has at least 8)"
    scale = lines[1].split()
    if not scale or any(_number(t) is None for t in scale):
        return f"POSCAR line 2 (scale factor) is not a number ({_clip(lines[1])})"
    if len(scale) == 3 and any(_number(t) == 0 for t in scale):
        return f"POSCAR line 2 looks like a lattice vector, not a scale factor ({_clip(lines[1])}); is a line missing?"
    if any(not math.isfinite(_number(t)) or _number(t) == 0 for t in scale):
        return f"POSCAR line 2 (scale factor) is {lines[1].strip()} (must be a finite, non-zero number)"
    for k in range(3):
        toks = lines[2 + k].split()
        values = [_number(t) for t in toks[:3]]
        if len(toks) < 3 or any(v is None for v in values):
            return f"POSCAR line {3 + k} (lattice vector {'abc'[k]}) is not three numbers ({_clip(lines[2 + k])})"
        if not all(math.isfinite(v) for v in values):
            return f"POSCAR line {3 + k} (lattice vector {'abc'[k]}) has a NaN or infinite value"
    species = lines[5].split()
    if all(t.isdigit() for t in species):
        return "POSCAR line 6 has no element symbols (VASP 4 format); add the species line"
    for sym in species:
        base = sym.split("_")[0].split("/")[0]
        if not Element.is_valid_symbol(base):
            return f"unknown element {sym!r} in the POSCAR species line (line 6)"
    counts = lines[6].split()
    if not counts or not all(t.isdigit() for t in counts):
        return f"POSCAR line 7 (atom counts) is not whole numbers ({_clip(lines[6])})"
    if len(counts) != len(species):
        return f"POSCAR lines 6 and 7 differ: {len(species)} element symbols but {len(counts)} counts"
    n_atoms = sum(int(t) for t in counts)
    k = 7
    if lines[k].strip()[:1].lower() == "s":
        k += 1
    if k >= len(lines) or lines[k].strip()[:1].lower() not in ("d", "c", "k"):
        mode = lines[k] if k < len(lines) else ""
        return f"POSCAR line {k + 1} should say Direct or Cartesian ({_clip(mode)})"
    coords = lines[k + 1 : k + 1 + n_atoms]
    for j, line in enumerate(coords):
        toks = line.split()
        values = [_number(t) for t in toks[:3]]
        if len(toks) < 3 or any(v is None for v in values):
            return f"POSCAR line {k + 2 + j} (coordinates of atom {j + 1}) is not three numbers ({_clip(line)})"
        if not all(math.isfinite(v) for v in values):
            return f"POSCAR line {k + 2 + j} (coordinates of atom {j + 1}) has a NaN or infinite value"
    if len(coords) < n_atoms:
        return f"the POSCAR is truncated: {len(coords)} coordinate lines for {n_atoms} atoms"
    return None
