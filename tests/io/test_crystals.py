"""Reading crystals: one record per crystal, in order, with specific errors for bad input."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from ase import Atoms
from pymatgen.core import Lattice, Structure

from cosynth.io import CrystalRecord, iter_crystals, read_crystals, to_structure

DATA = Path(__file__).resolve().parent / "data"
GOOD, BAD, TABLES = DATA / "good", DATA / "bad", DATA / "tables"
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
XIESPP = SHARED / "data" / "hypothetical_structures" / "xiespp_example_polymorph_cifs.tar.gz"


def require_shared(path: Path) -> Path:
    """Skip when the shared data folder is absent, but fail on CI where it must exist."""
    if not path.exists():
        message = f"shared data not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(message + " (required when CI is set)")
        pytest.skip(message)
    return path


def summary(records: list[CrystalRecord]) -> list[tuple[str, str]]:
    return [(r.id, r.status) for r in records]


def rocksalt(a: float = 5.64) -> Structure:
    """Conventional rock-salt cell, built by hand (space-group lookups are slow)."""
    fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    cl = [[x + 0.5 - (x >= 0.5), y, z] for x, y, z in fcc]
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, fcc + cl)


# ----------------------------------------------------------------------------- mixed batch


def test_mixed_batch_gives_one_record_per_crystal_in_order():
    inputs = [
        GOOD / "NaCl.cif",
        BAD / "garbage.cif",
        BAD / "truncated.cif",
        BAD / "unknown_element.cif",
        BAD / "disordered.cif",
        BAD / "no_atoms.cif",
        BAD / "too_close.cif",
        BAD / "long_cell.cif",
        BAD / "oblique.vasp",
        BAD / "short_vector.vasp",
        BAD / "molecule.xyz",
        str(GOOD / "POSCAR"),
        GOOD / "missing.cif",
        BAD / "notes.unknownext",
        GOOD / "two_blocks.cif",
    ]
    records = read_crystals(inputs)
    expected = [
        ("NaCl", None),
        ("garbage", "parse"),
        ("truncated", "incomplete cell: the CIF has no _cell_length_c"),
        ("unknown_element", "unknown element 'Xx'"),
        ("disordered", "disordered"),
        ("no_atoms", "no atoms"),
        ("too_close", "0.40 Å apart"),
        ("long_cell", "span 58.8 Å along z"),
        ("oblique", "apart"),
        ("short_vector", "0.50 Å apart"),
        ("molecule", "no periodic cell"),
        ("POSCAR", None),
        ("missing", "file not found"),
        ("notes", "unsupported file type"),
        ("two_blocks#0", None),
        ("two_blocks#1", None),
    ]
    assert [r.id for r in records] == [rid for rid, _ in expected]
    for record, (rid, keyword) in zip(records, expected, strict=True):
        if keyword is None:
            assert record.status == "ok" and record.error is None, record
            assert isinstance(record.structure, Structure) and record.structure.is_ordered
        else:
            assert record.status == "error" and record.structure is None, record
            assert keyword in record.error, (rid, record.error)
    by_id = {r.id: r for r in records}
    assert by_id["disordered"].error.startswith("site ")
    assert "resolve_disorder='majority'" in by_id["disordered"].error
    assert by_id["too_close"].formula == "H2"  # parsing got that far
    assert by_id["garbage"].formula is None
    assert by_id["two_blocks#1"].source == f"{GOOD / 'two_blocks.cif'}#1"
    assert by_id["NaCl"].source == str(GOOD / "NaCl.cif")


# ----------------------------------------------------------------------------- formats


def test_cif_with_symmetry_is_expanded_to_the_full_cell():
    (record,) = read_crystals(GOOD / "NaCl.cif")
    assert record.id == "NaCl" and record.formula == "NaCl"
    assert len(record.structure) == 8
    assert record.structure.lattice.a == pytest.approx(5.64)


def test_multi_block_cif_yields_one_record_per_block():
    records = read_crystals(GOOD / "two_blocks.cif")
    assert summary(records) == [("two_blocks#0", "ok"), ("two_blocks#1", "ok")]
    assert [r.formula for r in records] == ["CsCl", "Po"]


def test_poscar_json_extxyz():
    records = read_crystals([GOOD / "POSCAR", GOOD / "Cu.json", GOOD / "frames.extxyz"])
    assert summary(records) == [("POSCAR", "ok"), ("Cu", "ok"), ("frames#0", "ok"), ("frames#1", "ok")]
    assert [r.formula for r in records] == ["Si", "Cu", "MgO", "Fe"]
    assert records[2].source.endswith("frames.extxyz#0")


def test_format_detection_by_name_and_case(tmp_path):
    shutil.copy(GOOD / "POSCAR", tmp_path / "CONTCAR_relaxed")
    shutil.copy(GOOD / "POSCAR", tmp_path / "si.VASP")
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "upper.CIF")
    with gzip.open(tmp_path / "zipped.cif.gz", "wt") as fh:
        fh.write((GOOD / "NaCl.cif").read_text())
    records = read_crystals(sorted(tmp_path.iterdir()))
    assert summary(records) == [
        ("CONTCAR_relaxed", "ok"),
        ("si", "ok"),
        ("upper", "ok"),
        ("zipped", "ok"),
    ]


def test_json_list_of_structures(tmp_path):
    path = tmp_path / "many.json"
    silicon = Structure.from_file(GOOD / "POSCAR").as_dict()
    path.write_text(json.dumps([rocksalt().as_dict(), {"not": "a structure"}, silicon]))
    records = read_crystals(path)
    assert summary(records) == [("many#0", "ok"), ("many#1", "error"), ("many#2", "ok")]
    assert "lattice" in records[1].error


def test_json_errors_are_specific(tmp_path):
    bad_element = json.loads((GOOD / "Cu.json").read_text())
    bad_element["sites"][0]["species"][0]["element"] = "Qq"
    (tmp_path / "element.json").write_text(json.dumps(bad_element))
    (tmp_path / "broken.json").write_text('{"lattice": ')
    records = read_crystals([tmp_path / "element.json", tmp_path / "broken.json"])
    assert "unknown element 'Qq'" in records[0].error
    assert "JSON parse failed" in records[1].error


def test_poscar_without_species_line_is_not_read_as_hydrogen(tmp_path):
    lines = (GOOD / "POSCAR").read_text().splitlines()
    del lines[5]  # VASP 4 style: counts only
    (tmp_path / "POSCAR").write_text("\n".join(lines) + "\n")
    (record,) = read_crystals(tmp_path / "POSCAR")
    assert record.status == "error" and "element symbols" in record.error


# ----------------------------------------------------------------------------- folders and globs


def test_folder_reads_crystal_files_sorted_non_recursive(tmp_path):
    for name in ("b.cif", "a.cif"):
        shutil.copy(GOOD / "NaCl.cif", tmp_path / name)
    shutil.copy(GOOD / "POSCAR", tmp_path / "POSCAR")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "labels.csv").write_text("id,label\na,1\n")
    (tmp_path / ".hidden.cif").write_text("garbage")
    (tmp_path / "sub").mkdir()
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "sub" / "deep.cif")
    assert summary(read_crystals(tmp_path, recursive=False)) == [("POSCAR", "ok"), ("a", "ok"), ("b", "ok")]


def test_folder_is_searched_recursively_with_relative_ids(tmp_path):
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "a.cif")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    shutil.copy(GOOD / "NaCl.cif", tmp_path / ".git" / "hidden.cif")
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "sub" / "a.cif")
    shutil.copy(GOOD / "two_blocks.cif", tmp_path / "sub" / "deeper" / "two_blocks.cif")
    (tmp_path / "sub" / "labels.csv").write_text("id,label\na,1\n")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)  # a cycle is walked once
    records = read_crystals(tmp_path)
    assert summary(records) == [
        ("a", "ok"), ("sub/a", "ok"), ("sub/deeper/two_blocks#0", "ok"), ("sub/deeper/two_blocks#1", "ok"),
    ]
    assert records[1].source == str(tmp_path / "sub" / "a.cif")
    (empty := tmp_path / "empty").mkdir()
    (empty / "sub").mkdir()
    (record,) = read_crystals(empty)
    assert record.error == f"folder {empty} or its subfolders holds no crystal files"


def test_broken_links_and_missing_paths_become_error_rows(tmp_path):
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "a.cif")
    (tmp_path / "b.cif").symlink_to(tmp_path / "gone.cif")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not a crystal file name: not an input
    expected = [("a", "ok"), ("b", "error")]
    message = f"broken link: {tmp_path / 'b.cif'} points to missing {tmp_path / 'gone.cif'}"
    for source in (tmp_path, str(tmp_path / "*.cif")):
        records = read_crystals(source)
        assert summary(records) == expected
        assert records[1].error == message and records[1].source == str(tmp_path / "b.cif")
    (direct,) = read_crystals(tmp_path / "b.cif")
    assert direct.error == message
    (missing,) = read_crystals(tmp_path / "nope" / "x.cif")
    assert missing.status == "error" and missing.error == f"file not found: {tmp_path / 'nope' / 'x.cif'}"
    records = read_crystals([tmp_path / "a.cif", tmp_path / "nope.cif", tmp_path / "a.cif"])
    assert [r.status for r in records] == ["ok", "error", "ok"]


def test_good_corpus_folder():
    ids = [r.id for r in read_crystals(GOOD)]
    assert ids == ["Cu", "NaCl", "POSCAR", "frames#0", "frames#1", "two_blocks#0", "two_blocks#1"]


def test_empty_folder_is_an_error_record(tmp_path):
    (record,) = read_crystals(tmp_path)
    assert record.status == "error" and "no crystal files" in record.error


def test_glob_pattern():
    records = read_crystals(str(GOOD / "*.cif"))
    assert summary(records) == [("NaCl", "ok"), ("two_blocks#0", "ok"), ("two_blocks#1", "ok")]
    (none,) = read_crystals(str(GOOD / "*.nothing"))
    assert none.status == "error" and "no files match" in none.error


# ----------------------------------------------------------------------------- tables


def test_csv_table_with_cif_column():
    records = read_crystals(TABLES / "crystals.csv")
    assert summary(records) == [
        ("NaCl-rs", "ok"),
        ("NaN-rs", "ok"),
        ("FeCo-bcc", "error"),
        ("junk", "error"),
        ("blank", "formula_only"),  # a formula and no structure: composition models can use it
        ("NaCl-rs~2", "ok"),  # duplicate id made unique
        ("crystals:6", "ok"),  # empty id cell: table stem and row index
    ]
    assert records[1].formula == "NaN"  # sodium nitride, not a missing value
    assert "disordered" in records[2].error
    assert "incomplete cell: the CIF has no _cell_length_a" in records[3].error
    assert records[4].error == "empty structure cell in column 'cif'"
    assert records[2].source == f"{TABLES / 'crystals.csv'}:row 2"


def test_gzipped_csv(tmp_path):
    path = tmp_path / "crystals.csv.gz"
    with gzip.open(path, "wb") as fh:
        fh.write((TABLES / "crystals.csv").read_bytes())
    assert [r.status for r in read_crystals(path)] == ["ok", "ok", "error", "error", "formula_only", "ok", "ok"]


def test_jsonl_table_with_paths_relative_to_the_table():
    records = read_crystals(TABLES / "paths.jsonl")
    assert summary(records) == [
        ("rocksalt", "ok"),
        ("close-pair", "error"),
        ("missing", "error"),
        ("two-frames", "error"),
        ("paths:4", "error"),
        ("paths:5", "ok"),
        ("silicon", "ok"),
    ]
    errors = [r.error for r in records]
    assert "apart" in errors[1]
    assert "file not found" in errors[2]
    assert "holds 2 structures" in errors[3]
    assert "line 5" in errors[4]


def test_parquet_table_with_path_column(tmp_path):
    (tmp_path / "cifs").mkdir()
    shutil.copy(GOOD / "NaCl.cif", tmp_path / "cifs" / "NaCl.cif")
    table = pd.DataFrame(
        {
            "material_id": [101, 102, 103],
            "path": ["cifs/NaCl.cif", str(BAD / "disordered.cif"), None],
        }
    )
    table.to_parquet(tmp_path / "table.parquet")
    records = read_crystals(tmp_path / "table.parquet")
    assert summary(records) == [("101", "ok"), ("102", "error"), ("103", "error")]
    assert records[2].error == "empty structure cell in column 'path'"


def test_dataframe_with_objects_and_explicit_columns():
    table = pd.DataFrame(
        {
            "label": ["rs", "po", "mol", "js"],
            "crystal": [
                rocksalt(),
                (GOOD / "two_blocks.cif").read_text().split("data_Po")[0],
                Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]]),
                json.dumps(rocksalt(4.0).as_dict()),  # pymatgen JSON text
            ],
        }
    )
    records = read_crystals(table, id_column="label", structure_column="crystal")
    assert summary(records) == [("rs", "ok"), ("po", "ok"), ("mol", "error"), ("js", "ok")]
    assert records[1].formula == "CsCl"
    assert "no periodic cell" in records[2].error
    assert records[0].source == "<DataFrame #0>:row 0"


def test_table_without_structure_or_formula_column_is_a_usage_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,label\na,1\n")
    with pytest.raises(ValueError, match=r"no structure column.*no formula column.*\['id', 'label'\]"):
        read_crystals(path)
    with pytest.raises(ValueError, match="no id column 'mpid'"):
        read_crystals(TABLES / "crystals.csv", id_column="mpid")


# ----------------------------------------------------------------------------- in-memory objects


def test_structures_and_atoms_in_memory():
    labelled = rocksalt()
    labelled.properties["id"] = "mine"
    fe = Atoms("Fe", cell=[2.87, 2.87, 2.87], pbc=True)
    named = Atoms("Cu", cell=[[0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]], pbc=True, info={"id": "cu-fcc"})
    molecule = Atoms("N2", positions=[[0, 0, 0], [0, 0, 1.1]])
    records = read_crystals([rocksalt(), labelled, fe, named, molecule, rocksalt().as_dict()])
    assert summary(records) == [
        ("structure_0", "ok"),
        ("mine", "ok"),
        ("structure_2", "ok"),
        ("cu-fcc", "ok"),
        ("structure_4", "error"),
        ("structure_5", "ok"),
    ]
    assert records[2].formula == "Fe" and records[2].source == "<Atoms #2>"
    assert "no periodic cell" in records[4].error


def test_single_object_is_one_input():
    (record,) = read_crystals(Atoms("Fe", cell=[2.87] * 3, pbc=True))
    assert record.id == "structure_0" and record.ok


def test_unsupported_object_is_an_error_record():
    records = read_crystals([42, rocksalt()])
    assert summary(records) == [("input_0", "error"), ("structure_1", "ok")]
    assert "unsupported input type int" in records[0].error


def test_to_structure():
    s = rocksalt()
    copy = to_structure(s)
    assert copy == s and copy is not s
    assert to_structure(s.as_dict()) == s
    from_atoms = to_structure(Atoms("Fe", cell=[2.87] * 3, pbc=True))
    assert from_atoms.composition.reduced_formula == "Fe"
    with pytest.raises(ValueError, match="no periodic cell"):
        to_structure(Atoms("N2", positions=[[0, 0, 0], [0, 0, 1.1]]))
    with pytest.raises(TypeError):
        to_structure(3.0)


# ----------------------------------------------------------------------------- ids, options, streaming


def test_duplicate_ids_are_made_unique():
    taken = rocksalt()
    taken.properties["id"] = "NaCl~2"
    records = read_crystals([GOOD / "NaCl.cif", taken, GOOD / "NaCl.cif", GOOD / "NaCl.cif"])
    assert [r.id for r in records] == ["NaCl", "NaCl~2", "NaCl~3", "NaCl~4"]


def test_resolve_disorder_majority():
    (record,) = read_crystals(BAD / "disordered.cif", resolve_disorder="majority")
    assert record.status == "ok" and record.structure.is_ordered
    assert record.formula in ("AlFe", "AlCo")


def test_validate_false_returns_parsed_structure():
    (record,) = read_crystals(BAD / "too_close.cif", validate=False)
    assert record.ok and len(record.structure) == 2


def test_bad_option_fails_before_reading():
    with pytest.raises(ValueError, match="resolve_disorder"):
        iter_crystals([GOOD / "NaCl.cif"], resolve_disorder="drop")


def test_iter_crystals_is_lazy():
    touched: list[str] = []

    def inputs():
        touched.append("first")
        yield GOOD / "NaCl.cif"
        touched.append("second")
        yield BAD / "garbage.cif"
        touched.append("third")
        yield 1 / 0  # never reached if the consumer stops early

    stream = iter_crystals(inputs())
    assert touched == []
    first = next(stream)
    assert first.id == "NaCl" and first.ok
    assert touched == ["first"]
    second = next(stream)
    assert second.status == "error" and touched == ["first", "second"]


# ----------------------------------------------------------------------------- real CIFs


def test_real_polymorph_cifs(tmp_path):
    archive = require_shared(XIESPP)
    with tarfile.open(archive) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path, **safe)
    records = read_crystals(str(tmp_path / "*" / "*.cif"))
    assert len(records) == 13
    assert all(r.ok for r in records), [(r.id, r.error) for r in records if not r.ok]
    assert {r.formula for r in records} == {"SiC", "GaN", "MoS2"}
    assert "GaN_9" in {r.id for r in records}
    assert all(len(r.structure) > 0 for r in records)


def test_formula_only_rows_keep_their_formula_and_extra_columns(tmp_path):
    path = tmp_path / "formulas.csv"
    path.write_text("id,formula,batch\na,NaCl,7\nb,NaN,8\n")
    records = read_crystals(path)
    assert [(r.id, r.status, r.formula) for r in records] == [("a", "formula_only", "NaCl"),
                                                               ("b", "formula_only", "NaN")]
    assert all(r.has_formula and not r.ok and r.structure is None for r in records)
    assert records[0].extra == {"batch": "7"} and records[1].source.endswith(":row 1")


def test_cif_text_is_an_input_not_a_path():
    from pymatgen.core import Lattice, Structure

    text = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    records = read_crystals([text, "data_broken\n_cell_length_a 3\n"])
    assert records[0].ok and records[0].source == "<CIF text #0>"
    assert records[1].status == "error" and "File name too long" not in records[1].error


def test_reading_is_quiet_but_real_errors_stay_rows():
    import warnings

    s = Structure(Lattice.cubic(4), ["He", "Ar", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cif = s.to(fmt="cif")
    bad = cif.replace("_cell_length_a", "_cell_length_a 1e30 #")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_crystals([s, pd.DataFrame({"cif": [cif, bad]})])
    assert [str(w.message) for w in caught] == []  # no electronegativity or CIF-parser noise
    assert [r.status for r in records] == ["ok", "ok", "error"]
    assert records[2].error == "cell length a = 1e+30 Å is beyond the 1000 Å limit (not a crystal cell)"
