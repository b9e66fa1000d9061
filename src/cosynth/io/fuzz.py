"""Seeded mutation of real crystal files, and a driver that runs reading, validation and imaging on them.

Used by ``tests/io/test_fuzz.py`` and ``benchmarks/fuzz_predict.py``. Mutations are the ones a user
met in practice: numbers replaced by 1e30, NaN, inf or nothing; lines dropped, duplicated, swapped
or garbled; bytes flipped; elements replaced; files truncated. A mutation never adds a ``data_``
header, so every mutated CIF is still one input that must give exactly one record.

Run as ``python -m cosynth.io.fuzz --n 1000 --seed 0 --limit-gb 3`` to print a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FuzzInput", "make_inputs", "mutate_text", "run_fuzz", "seed_texts"]

MUTATIONS = ("number", "cell", "drop", "duplicate", "swap", "garble", "flip", "element", "truncate")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?:\(\d+\))?(?![\w.])")
_BAD_NUMBERS = ("1e30", "-1e30", "1e-30", "NaN", "nan", "inf", "-inf", "", "1e300", "0", "?", ".")
_BAD_ELEMENTS = ("Xx", "Q", "J", "Uuu", "D", "na", "CL", "X1", "Og", "Fe", "H", "0", "")
_GARBAGE = "#;'\"_ \t0123456789.-+eE()[]{}xyzXYZabc\\/?!"


@dataclass
class FuzzInput:
    """One mutated input: a file (``name``, ``text``, format ``kind``) or a table row (kind ``row``)."""

    name: str
    kind: str
    text: str
    mutations: tuple[str, ...]


def seed_texts(shared: Path | None = None, n_shared: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """Real CIF texts (repo test data, ASE's COD minerals, optionally MP structures) and POSCARs made from them.

    Only CIFs with a single ``data_`` block are kept; POSCARs are made from the first half of them (at least
    8), where they parse to an ordered structure of at most 200 sites.

    Args:
        shared: a CSV with a ``cif`` column to draw extra CIFs from, or None.
        n_shared: how many CIFs to draw from it.
        seed: seed of the draw.

    Returns:
        {"cif": CIF texts, "poscar": POSCAR texts}.
    """
    repo = Path(__file__).resolve().parents[3]
    cifs: list[str] = []
    for folder in (repo / "tests" / "io" / "data" / "good",):
        cifs += [p.read_text(errors="replace") for p in sorted(folder.glob("*.cif"))]
    try:
        import ase

        minerals = Path(ase.__file__).parent / "test" / "testdata" / "minerals"
        cifs += [p.read_text(errors="replace") for p in sorted(minerals.glob("*.cif"))]
    except ImportError:  # pragma: no cover - ase is a dependency
        pass
    if shared is not None:
        import pandas as pd

        table = pd.read_csv(shared, usecols=["cif"], keep_default_na=False, dtype=str)
        pick = np.random.default_rng(seed).choice(len(table), size=min(n_shared, len(table)), replace=False)
        cifs += [table["cif"].iloc[int(i)] for i in sorted(pick)]
    # one data_ block per seed: each mutated file is then one input that must give one record
    cifs = [t for t in cifs if len(re.findall(r"(?im)^\s*data_", t)) == 1]
    poscars = _poscars(cifs[: max(8, len(cifs) // 2)])
    return {"cif": cifs, "poscar": poscars}


def _poscars(cifs: list[str]) -> list[str]:
    import warnings

    from pymatgen.io.cif import CifParser
    from pymatgen.io.vasp import Poscar

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for text in cifs:
            try:
                structure = CifParser.from_str(text).parse_structures(primitive=False)[0]
                if structure.is_ordered and len(structure) <= 200:
                    out.append(Poscar(structure).get_str())
            except Exception:  # noqa: BLE001 - a seed that does not parse is just not used
                continue
    return out


def mutate_text(text: str, rng: np.random.Generator, kind: str = "cif", n: int | None = None) -> tuple[str, tuple]:
    """``text`` with 1–3 random mutations (or ``n``).

    Args:
        text: the input text.
        rng: the random generator.
        kind: the text's format (``cif`` or ``poscar``), passed to each mutation.
        n: the number of mutations; None draws 1–3.

    Returns:
        (new text, names of the mutations).
    """
    names = tuple(str(m) for m in rng.choice(MUTATIONS, size=n or int(rng.integers(1, 4))))
    for name in names:
        text = _MUTATE[name](text, rng, kind)
    return text, names


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _safe_line(lines: list[str], rng: np.random.Generator) -> int | None:
    """A random line index that is not a ``data_`` header (copying one would add a crystal)."""
    ok = [i for i, line in enumerate(lines) if not line.lstrip().lower().startswith("data_")]
    return int(rng.choice(ok)) if ok else None


def _m_number(text, rng, kind):
    found = list(_NUMBER.finditer(text))
    if not found:
        return text
    for _ in range(int(rng.integers(1, 3))):
        m = found[int(rng.integers(len(found)))]
        new = str(rng.choice(_BAD_NUMBERS))
        text = text[: m.start()] + new + text[m.end():]
        found = list(_NUMBER.finditer(text))
        if not found:
            break
    return text


def _m_cell(text, rng, kind):
    """A cell number (CIF cell tag, POSCAR scale or lattice line) replaced by a hostile one."""
    lines = _lines(text)
    if kind == "poscar":
        rows = [i for i in (1, 2, 3, 4) if i < len(lines)]
    else:
        rows = [i for i, line in enumerate(lines) if line.lstrip().lower().startswith("_cell_")]
    if not rows:
        return text
    i = int(rng.choice(rows))
    found = list(_NUMBER.finditer(lines[i]))
    if found:
        m = found[int(rng.integers(len(found)))]
        lines[i] = lines[i][: m.start()] + str(rng.choice(_BAD_NUMBERS)) + lines[i][m.end():]
    return "\n".join(lines)


def _m_drop(text, rng, kind):
    lines = _lines(text)
    i = int(rng.integers(len(lines)))
    return "\n".join(lines[:i] + lines[i + 1:])


def _m_duplicate(text, rng, kind):
    lines = _lines(text)
    i = _safe_line(lines, rng)
    if i is None:
        return text
    return "\n".join(lines[: i + 1] + [lines[i]] * int(rng.integers(1, 3)) + lines[i + 1:])


def _m_swap(text, rng, kind):
    lines = _lines(text)
    i, j = (int(k) for k in rng.integers(len(lines), size=2))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _m_garble(text, rng, kind):
    lines = _lines(text)
    i = _safe_line(lines, rng)
    if i is None or not lines[i]:
        return text
    chars = list(lines[i])
    for _ in range(int(rng.integers(1, 6))):
        chars[int(rng.integers(len(chars)))] = _GARBAGE[int(rng.integers(len(_GARBAGE)))]
    line = "".join(chars)
    lines[i] = line if not line.lstrip().lower().startswith("data_") else "#" + line
    return "\n".join(lines)


def _m_flip(text, rng, kind):
    data = bytearray(text.encode("utf-8", errors="replace"))
    if not data:
        return text
    for _ in range(int(rng.integers(1, 8))):
        k = int(rng.integers(len(data)))
        data[k] ^= 1 << int(rng.integers(8))
    out = data.decode("utf-8", errors="replace")
    if out.lower().count("data_") > text.lower().count("data_"):  # a flip made a new header: comment it out
        out = re.sub(r"(?im)^(\s*)(data_)", r"\1#\2", out)
    return out


def _m_element(text, rng, kind):
    lines = _lines(text)
    if kind == "poscar":
        idx = 5 if len(lines) > 5 else len(lines) - 1
        toks = lines[idx].split()
        if toks:
            toks[int(rng.integers(len(toks)))] = str(rng.choice(_BAD_ELEMENTS))
            lines[idx] = " ".join(toks)
        return "\n".join(lines)
    sites = [i for i, line in enumerate(lines) if re.match(r"\s*[A-Z][a-z]?\d*\s", line) and len(line.split()) >= 4]
    if not sites:
        return text
    i = int(rng.choice(sites))
    toks = lines[i].split()
    sym = str(rng.choice(_BAD_ELEMENTS))
    k = 1 if len(toks) > 1 and re.fullmatch(r"[A-Z][a-z]?[0-9+-]*", toks[1]) else 0
    toks[k] = sym or "."
    lines[i] = " ".join(toks)
    return "\n".join(lines)


def _m_truncate(text, rng, kind):
    return text[: int(rng.integers(0, max(1, len(text))))]


_MUTATE = {
    "number": _m_number,
    "cell": _m_cell,
    "drop": _m_drop,
    "duplicate": _m_duplicate,
    "swap": _m_swap,
    "garble": _m_garble,
    "flip": _m_flip,
    "element": _m_element,
    "truncate": _m_truncate,
}


def extreme_inputs(seeds: dict[str, list[str]]) -> list[FuzzInput]:
    """Hand-made worst cases: 1e30 and 1e-30 Å cells, a million atoms, a near-flat cell, huge files."""
    cif = next(t for t in seeds["cif"] if "_cell_length_a" in t)
    poscar = seeds["poscar"][0]
    out = []

    def cell(tag: str, value: str) -> str:
        return re.sub(rf"(?im)^(\s*{tag}\s+)\S+", rf"\g<1>{value}", cif)

    for tag in ("_cell_length_a", "_cell_length_b", "_cell_length_c"):
        out += [FuzzInput(f"x_{tag}_{v}.cif", "cif", cell(tag, v), ("extreme",)) for v in ("1e30", "1e-30", "1e300")]
    flat = cell("_cell_angle_alpha", "179.9999")
    out.append(FuzzInput("x_flat.cif", "cif", flat, ("extreme",)))
    big = cif
    for tag in ("_cell_length_a", "_cell_length_b", "_cell_length_c"):
        big = re.sub(rf"(?im)^(\s*{tag}\s+)\S+", r"\g<1>1e30", big)
    out.append(FuzzInput("x_all_1e30.cif", "cif", big, ("extreme",)))
    lines = poscar.split("\n")
    out.append(FuzzInput("x_scale.vasp", "poscar", "\n".join([lines[0], "1e30", *lines[2:]]), ("extreme",)))
    out.append(FuzzInput("x_tiny.vasp", "poscar", "\n".join([lines[0], "1e-30", *lines[2:]]), ("extreme",)))
    counts = "\n".join([*lines[:6], " ".join("1000000" for _ in lines[6].split()), *lines[7:]])
    out.append(FuzzInput("x_million.vasp", "poscar", counts, ("extreme",)))
    rows = "\n".join(f"C{i} C {i % 97 / 97:.4f} {i % 89 / 89:.4f} {i % 83 / 83:.4f}" for i in range(40_000))
    sites = ("data_many\n_cell_length_a 40\n_cell_length_b 40\n_cell_length_c 40\n_cell_angle_alpha 90\n"
             "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
             "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n" + rows + "\n")
    out.append(FuzzInput("x_40000_sites.cif", "cif", sites, ("extreme",)))
    out.append(FuzzInput("x_oblique.vasp", "poscar", "oblique\n1.0\n3 0 0\n90.3 0.4 0\n0 0 3\nLi\n1\nDirect\n0 0 0\n",
                         ("extreme",)))
    out.append(FuzzInput("x_skewed.vasp", "poscar", "skewed\n1.0\n3 0 0\n990 0.9 0\n0 0 3\nLi\n1\nDirect\n0 0 0\n",
                         ("extreme",)))
    return out


def make_inputs(n: int, seed: int = 0, shared: Path | None = None) -> list[FuzzInput]:
    """``n`` inputs: the :func:`extreme_inputs`, then mutated ones (~60 % CIF files, ~20 % POSCAR
    files, ~20 % CIF table rows), seeded.

    Args:
        n: the number of inputs (the extreme ones included).
        seed: seed of the draws.
        shared: a CSV of extra seed CIFs (see :func:`seed_texts`), or None.

    Returns:
        The list of :class:`FuzzInput`.
    """
    rng = np.random.default_rng(seed)
    seeds = seed_texts(shared, seed=seed)
    out = extreme_inputs(seeds)[:n]
    for k in range(len(out), n):
        kind = str(rng.choice(["cif", "poscar", "row"], p=[0.6, 0.2, 0.2]))
        pool = seeds["poscar"] if kind == "poscar" and seeds["poscar"] else seeds["cif"]
        kind = "poscar" if pool is seeds["poscar"] and kind == "poscar" else ("row" if kind == "row" else "cif")
        base = pool[int(rng.integers(len(pool)))]
        text, names = mutate_text(base, rng, "poscar" if kind == "poscar" else "cif")
        name = f"m{k:05d}" + {"cif": ".cif", "poscar": ".vasp", "row": ""}[kind]
        out.append(FuzzInput(name, kind, text, names))
    return out


def write_inputs(inputs: list[FuzzInput], folder: Path) -> list[Path]:
    """Files for the file inputs and one ``rows.csv`` (columns id, cif) for the table rows."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in inputs:
        if item.kind != "row":
            path = folder / item.name
            path.write_bytes(item.text.encode("utf-8", errors="replace"))
            paths.append(path)
    rows = [(i.name, i.text.replace("\x00", "")) for i in inputs if i.kind == "row"]
    if rows:
        table = pd.DataFrame(rows, columns=["id", "cif"])
        table.to_csv(folder / "rows.csv", index=False)
        paths.append(folder / "rows.csv")
    return paths


def run_fuzz(n: int = 1000, seed: int = 0, shared: Path | None = None, image: bool = True) -> dict:
    """Read, validate and (for valid crystals) tile and image every mutated input.

    A problem is an exception that escapes the reader, a number of records other than one per input, or an
    imaging error; a bare error is a message without plain words (:func:`cosynth.io.errors.is_bare`).

    Args:
        n: the number of inputs.
        seed: seed of the inputs.
        shared: a CSV of extra seed CIFs, or None.
        image: also tile and image each valid crystal.

    Returns:
        A JSON-ready summary: counts of records, ok and errors, bare messages and problems (with examples),
        time, the slowest input, memory and the most common error messages.
    """
    import pandas as pd

    from cosynth.io import iter_crystals
    from cosynth.io.errors import is_bare
    from cosynth.represent.voxel import CrystalImager

    inputs = make_inputs(n, seed, shared)
    start_rss = _rss_mb()
    t0 = time.perf_counter()
    counts: Counter = Counter()
    bare, messages, problems = [], Counter(), []
    slowest = (0.0, "")
    for k, item in enumerate(inputs):
        t = time.perf_counter()
        if item.kind == "row":
            source = pd.DataFrame({"id": [item.name], "cif": [item.text]})
        else:
            source = _write_temp(item)
        try:
            records = list(iter_crystals(source))
        except Exception as exc:  # noqa: BLE001 - this is what the fuzz test looks for
            problems.append(f"{item.name} {item.mutations}: escaped {type(exc).__name__}: {exc}")
            continue
        if len(records) != 1:
            problems.append(f"{item.name} {item.mutations}: {len(records)} records")
        for rec in records:
            counts[rec.status] += 1
            if rec.ok and image:
                try:
                    imager = CrystalImager.from_structure(rec.structure)
                    imager.image([10.0, 20.0, 30.0])
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{item.name} {item.mutations}: imaging raised {type(exc).__name__}: {exc}")
            elif not rec.ok:
                messages[_shape(rec.error)] += 1
                if is_bare(rec.error):
                    bare.append(f"{item.name} {item.mutations}: {rec.error}")
        dt = time.perf_counter() - t
        if dt > slowest[0]:
            slowest = (dt, f"{item.name} {item.mutations}")
        if k % 100 == 0:
            _cleanup()
    errors = counts["error"]
    return {
        "inputs": n,
        "seed": seed,
        "records": sum(counts.values()),
        "ok": counts["ok"],
        "errors": errors,
        "bare": len(bare),
        "bare_share": len(bare) / errors if errors else 0.0,
        "bare_examples": bare[:20],
        "problems": problems[:50],
        "n_problems": len(problems),
        "seconds": time.perf_counter() - t0,
        "slowest": {"seconds": slowest[0], "input": slowest[1]},
        "rss_start_mb": start_rss,
        "rss_peak_mb": _rss_mb(),
        "top_messages": messages.most_common(40),
    }


_TMP: list = []


def _write_temp(item: FuzzInput) -> Path:
    import tempfile

    if not _TMP:
        _TMP.append(tempfile.TemporaryDirectory(prefix="cosynth-fuzz-"))
    path = Path(_TMP[0].name) / item.name
    path.write_bytes(item.text.encode("utf-8", errors="replace"))
    return path


def _cleanup() -> None:
    if _TMP:
        for p in Path(_TMP[0].name).iterdir():
            p.unlink()


def _shape(message: str) -> str:
    """A message with numbers and quoted values blanked, to count kinds of message."""
    message = message.split(" (detail:")[0]
    return re.sub(r"'[^']*'|\d+(\.\d+)?(e[-+]?\d+)?", "#", message)[:120]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=None, help="mp_structures_labelled.csv.gz to draw seeds from")
    parser.add_argument("--limit-gb", type=float, default=0.0, help="address-space limit (RLIMIT_AS) for this process")
    parser.add_argument("--no-image", action="store_true")
    args = parser.parse_args(argv)
    if args.limit_gb > 0:
        limit = int(args.limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    summary = run_fuzz(args.n, args.seed, args.shared, image=not args.no_image)
    json.dump(summary, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
