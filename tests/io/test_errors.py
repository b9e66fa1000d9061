"""Errors in words: parser failures become messages naming the CIF tag or POSCAR line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cosynth.io import read_crystals
from cosynth.io.errors import describe_error, diagnose_cif, diagnose_poscar, is_bare

CELL = """data_x
_cell_length_a {a}
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
"""
SITES = """loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
{rows}
"""
POSCAR = "NaCl\n1.0\n5.6 0 0\n0 5.6 0\n0 0 5.6\nNa Cl\n1 1\nDirect\n0 0 0\n0.5 0.5 0.5\n"


def cif(a="4.0", rows="Na1 Na 0 0 0\nCl1 Cl 0.5 0.5 0.5"):
    return CELL.format(a=a) + SITES.format(rows=rows)


def read_one(text: str) -> str:
    (record,) = read_crystals(pd.DataFrame({"cif": [text]}))
    assert record.status == "error"
    return record.error


def test_good_inputs_have_no_diagnosis():
    assert diagnose_cif(cif()) is None
    assert diagnose_poscar(POSCAR) is None
    (record,) = read_crystals(pd.DataFrame({"cif": [cif()]}))
    assert record.ok


@pytest.mark.parametrize("value, words", [
    ("abc", "the CIF's _cell_length_a is not a number ('abc') (line 2)"),
    ("?", "the CIF's _cell_length_a is empty (line 2)"),
    ("-4", "the CIF's _cell_length_a is -4 (a cell length must be positive) (line 2)"),
])
def test_cell_tag_is_named(value, words):
    assert diagnose_cif(cif(a=value)) == words
    message = read_one(cif(a=value))
    assert message.startswith(words) and not is_bare(message)


def test_truncated_atom_site_list_counts_values_and_columns():
    text = cif(rows="Na1 Na 0 0 0\nCl1 Cl 0.5 0.5")  # 9 values, 5 columns
    assert diagnose_cif(text) == "atom site list is truncated: 9 values do not fill rows of 5 columns (loop_ on line 9)"
    message = read_one(text)
    assert message.startswith("atom site list is truncated: 9 values do not fill rows of 5 columns")
    assert "(detail: " in message  # pymatgen's own words survive as a trailing detail


def test_atom_site_values_and_elements():
    assert diagnose_cif(cif(rows="Na1 Na 0 0 x\nCl1 Cl 0.5 0.5 0.5")) == (
        "atom site 1 ('Na1'): the CIF's _atom_site_fract_z is not a number ('x')")
    assert diagnose_cif(cif(rows="Na1 Na 0 0 0\nQ1 Qq 0.5 0.5 0.5")) == (
        "unknown element 'Qq' (atom site 2 ('Q1'), _atom_site_type_symbol)")
    assert "unknown element" in read_one(cif(rows="Na1 Na 0 0 0\nXx1 Xx 0.5 0.5 0.5"))
    assert diagnose_cif(CELL.format(a="4")) == "no atoms (the CIF has no _atom_site_fract_x/y/z list)"
    assert read_one(CELL.format(a="4")).startswith("no atoms")


def test_loop_without_tags_and_bad_symmetry_operation():
    assert diagnose_cif(cif() + "loop_\n1 2 3\n").startswith("a loop_ (line 17) has no _tags")
    text = cif().replace("_symmetry_space_group_name_H-M 'P 1'",
                         "loop_\n_symmetry_equiv_pos_as_xyz\n'x, y, z'\n'x, y+q, z'")
    assert diagnose_cif(text).startswith(
        "symmetry operation 2 ('x, y+q, z') in _symmetry_equiv_pos_as_xyz is not valid")


@pytest.mark.parametrize("edit, words", [
    (lambda ls: ls[:4], "the POSCAR is truncated: 4 lines (a POSCAR has at least 8)"),
    (lambda ls: ls[:3] + ["0 abc 0"] + ls[4:], "POSCAR line 4 (lattice vector b) is not three numbers ('0 abc 0')"),
    (lambda ls: ls[:5] + ["Na Xx"] + ls[6:], "unknown element 'Xx' in the POSCAR species line (line 6)"),
    (lambda ls: ls[:6] + ["1 1 1"] + ls[7:], "POSCAR lines 6 and 7 differ: 2 element symbols but 3 counts"),
    (lambda ls: ls[:9] + ["0.5 0.5"], "POSCAR line 10 (coordinates of atom 2) is not three numbers ('0.5 0.5')"),
])
def test_poscar_problems_name_the_line(tmp_path, edit, words):
    text = "\n".join(edit(POSCAR.splitlines())) + "\n"
    assert diagnose_poscar(text) == words
    (tmp_path / "POSCAR").write_text(text)
    (record,) = read_crystals(tmp_path / "POSCAR")
    assert record.status == "error" and not is_bare(record.error), record.error


def test_describe_error_keeps_the_exception_only_as_detail():
    message = describe_error(ZeroDivisionError("integer modulo by zero"), "cif")
    assert message == ("a list in the CIF is truncated (its values do not fill whole rows) "
                       "(detail: ZeroDivisionError: integer modulo by zero)")
    assert describe_error(ValueError("could not convert string to float: 'x1'"), "poscar").startswith(
        "the POSCAR has a value that is not a number ('x1')")
    assert describe_error(MemoryError(), "cif").startswith("out of memory")
    assert describe_error(RuntimeError("boom"), "cif") == (
        "the CIF could not be read (the parser failed) (detail: RuntimeError: boom)")


def test_is_bare():
    assert is_bare("ZeroDivisionError: integer modulo by zero")
    assert is_bare("CIF parse failed: ValueError: len(items)=77 is not a multiple of n=9")
    assert is_bare("zip() argument 2 is longer than argument 1")
    assert is_bare("the CIF could not be read (the parser failed) (detail: RuntimeError: boom)")
    assert not is_bare("atom site list is truncated: 77 values do not fill rows of 9 columns")
    assert not is_bare("the CIF's _cell_length_a is not a number ('1e3x')")
    assert not is_bare("atoms 0 and 1 are 0.40 Å apart (< 0.6766 Å minimum)")


def test_size_limits_make_error_rows_not_memory_spikes(tmp_path, monkeypatch):
    import gzip

    from cosynth.io import crystals

    monkeypatch.setattr(crystals, "MAX_TEXT_BYTES", 10_000)
    with gzip.open(tmp_path / "bomb.cif.gz", "wt") as fh:  # 200 bytes on disk, 1 MB of text
        fh.write(cif() + "#" * 1_000_000)
    (record,) = read_crystals(tmp_path / "bomb.cif.gz")
    assert record.error == "file too large: more than 10000 bytes of text (limit 10000)"
    monkeypatch.setattr(crystals, "_MAX_CIF_EXPANSION", 50)
    rows = "\n".join(f"C{i} C 0.{i:04d} 0.5 0.5" for i in range(60))
    assert read_one(cif(rows=rows)).startswith("CIF too large: up to 75 atom sites × 1 symmetry operations")
    (tmp_path / "POSCAR").write_text(POSCAR.replace("\n1 1\n", "\n1000000 1\n"))
    (record,) = read_crystals(tmp_path / "POSCAR")
    assert record.error == "too many atoms: POSCAR line 7 says 1000001 (limit 100000)"


def test_unreadable_table_names_the_line(tmp_path):
    (tmp_path / "t.csv").write_text('id,cif\na,"x"\nb,"y",extra\n')
    (record,) = read_crystals(tmp_path / "t.csv")
    assert record.error.startswith("CSV table line 3 has 3 fields, expected 2 (a quote or comma is off) (detail: ")


def test_ase_read_failures_in_words(tmp_path):
    good = (Path(__file__).parent / "data" / "good" / "frames.extxyz").read_text()
    cases = {
        "cut.extxyz": (good[: len(good) // 2], "has a line with fewer values than its columns"),
        "head.extxyz": ("abc\n" + good, "does not start with an atom count line (xyz header)"),
        "empty.extxyz": ("", "the file is empty"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        (record,) = read_crystals(tmp_path / name)
        assert words in record.error and not is_bare(record.error), record.error


def test_json_with_too_many_sites_is_refused_before_building_it(tmp_path, monkeypatch):
    import json

    from cosynth.io import crystals

    monkeypatch.setattr(crystals, "MAX_ATOMS", 3)
    site = {"species": [{"element": "Na", "occu": 1}], "abc": [0, 0, 0]}
    data = {"lattice": {"matrix": [[4, 0, 0], [0, 4, 0], [0, 0, 4]]}, "sites": [site] * 4}
    (tmp_path / "s.json").write_text(json.dumps(data))
    (record,) = read_crystals(tmp_path / "s.json")
    assert record.error == "too many atoms: 4 sites in the JSON (limit 3)"
