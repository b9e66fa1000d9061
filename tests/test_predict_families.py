"""`cosynth predict` with a model of every family, on CIFs and on formula-only rows (one predictor)."""

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Element, Lattice, Structure
from typer.testing import CliRunner

from cosynth.cli import app
from cosynth.models.registry import FORMAT, load_model, save_model
from cosynth.models.voxel_cnn.model import VoxelCNN

PAIRS = [(a, b) for a in ("Li", "Na", "K", "Rb") for b in ("F", "Cl", "Br")]


def _table() -> pd.DataFrame:
    rows = []
    for i, (a, b) in enumerate(PAIRS):
        lat = 2 * (Element(a).atomic_radius + Element(b).atomic_radius)
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        rows.append({"id": f"{a}{b}", "formula": f"{a}{b}", "cif": s.to(fmt="cif"), "target": float(lat),
                     "split": ("train", "train", "val", "test")[i % 4]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("families")
    table = _table()
    table.to_csv(path / "table.csv", index=False)
    table[["id", "formula"]].assign(batch=7).to_csv(path / "formulas.csv", index=False)
    cifs = path / "cifs"
    cifs.mkdir()
    for rid, cif in zip(table["id"][:3], table["cif"][:3]):
        (cifs / f"{rid}.cif").write_text(cif)
    return path


def _invoke(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(workdir):
    """A model file per graph family, trained by the CLI for two epochs."""
    out = {}
    for family in ("roost", "cgcnn", "cosnet"):
        run = workdir / f"run-{family}"
        _invoke(["train", family, workdir / "table.csv", "--target", "target", "--epochs", "2", "--batch-size", "4",
                 "--threads", "1", "-o", run])
        out[family] = run / "seed0" / "model.pt"
    return out


def test_roost_predicts_a_formula_only_csv(trained, workdir):
    out = workdir / "roost.csv"
    _invoke(["predict", workdir / "formulas.csv", "--model", trained["roost"], "-o", out])
    df = pd.read_csv(out)
    assert list(df["id"]) == [f"{a}{b}" for a, b in PAIRS]
    assert (df["status"] == "ok").all() and (df["modality"] == "composition").all()
    assert np.isfinite(df["prediction"]).all() and (df["batch"] == 7).all()  # extra columns carried through
    assert df["source"].str.contains("formulas.csv:row").all()
    # the same model through --formula gives the same numbers for the same formula
    res = _invoke(["predict", "--formula", "LiF,NaCl", "--model", trained["roost"], "-o", workdir / "f.csv"])
    by_formula = pd.read_csv(workdir / "f.csv").set_index("formula")["prediction"]
    assert by_formula["NaCl"] == pytest.approx(df.set_index("formula").loc["NaCl", "prediction"], rel=1e-5)
    assert "error" not in res.output


def test_cgcnn_predicts_cifs_and_names_formula_only_rows(trained, workdir):
    out = workdir / "cgcnn.csv"
    _invoke(["predict", workdir / "cifs", "--model", trained["cgcnn"], "-o", out])
    df = pd.read_csv(out)
    assert len(df) == 3 and (df["status"] == "ok").all() and (df["modality"] == "structure").all()
    nothing = CliRunner().invoke(app, ["predict", str(workdir / "formulas.csv"), "--model", str(trained["cgcnn"]),
                                       "-o", str(out)])
    assert nothing.exit_code == 1  # nothing could be predicted: the rows say why, the status says so
    df = pd.read_csv(out)
    assert (df["status"] == "error").all()
    assert df["error"].str.contains("needs a structure; this row has a formula only").all()


def test_cosnet_uses_what_each_row_has(trained, workdir):
    mixed = _table()
    mixed.loc[mixed.index % 2 == 1, "cif"] = None
    mixed[["id", "formula", "cif"]].to_csv(workdir / "mixed.csv", index=False)
    out = workdir / "cosnet.csv"
    _invoke(["predict", workdir / "mixed.csv", "--model", trained["cosnet"], "-o", out])
    df = pd.read_csv(out)
    assert (df["status"] == "ok").all()
    assert list(df["modality"]) == ["composition+structure", "composition"] * (len(df) // 2)
    assert df.loc[df["modality"] == "composition", "composition_weight"].eq(1.0).all()
    loaded = load_model(trained["cosnet"])
    assert loaded.family == "cosnet" and loaded.inputs == "either" and loaded.meta["format"] == FORMAT


def test_voxel_model_predicts_cifs_and_names_formula_only_rows(workdir):
    torch.manual_seed(0)
    path = save_model(VoxelCNN(), workdir / "voxel.pt", {"sampler": "haar"})
    out = workdir / "voxel.csv"
    _invoke(["predict", workdir / "cifs", workdir / "formulas.csv", "--model", path, "-E", "2", "-o", out])
    df = pd.read_csv(out)
    assert len(df) == 3 + len(PAIRS)
    assert (df["modality"].iloc[:3] == "structure").all() and df["likelihood"].iloc[:3].between(0, 1).all()
    assert df["error"].iloc[3:].str.contains("voxel_cnn model needs a structure").all()


def test_only_the_voxel_model_needs_the_atoms_inside_its_image_box(trained, tmp_path):
    # a 60 Å long cell: graph models take it whole; the voxel CNN's 50 Å box cannot hold it
    long_cell = Structure(Lattice.orthorhombic(4, 4, 60), ["Na", "Cl"], [[0, 0, 0.01], [0.5, 0.5, 0.99]])
    graph = load_model(trained["cgcnn"]).predict([long_cell]).crystals
    assert graph["status"].tolist() == ["ok"] and np.isfinite(graph["prediction"]).all()
    torch.manual_seed(0)
    voxel = load_model(save_model(VoxelCNN(), tmp_path / "voxel.pt", {"sampler": "haar"}))
    imaged = voxel.predict([long_cell], ensemble=2).crystals
    assert imaged["status"].tolist() == ["error"]
    assert imaged["error"].iloc[0] == "atoms span 58.8 Å along z (> 50 Å image box)"


def test_cif_text_structures_and_frames_go_straight_in(trained):
    table = _table()
    loaded = load_model(trained["cosnet"])
    s = Structure.from_str(table["cif"][0], fmt="cif")
    res = loaded.predict([table["cif"][0], s, table[["id", "formula"]].head(2)]).crystals
    assert list(res["status"]) == ["ok"] * 4
    assert list(res["modality"]) == ["composition+structure", "composition+structure", "composition", "composition"]
    assert res["prediction"].iloc[0] == pytest.approx(res["prediction"].iloc[1], rel=1e-5)


def test_raw_keras_weights_point_to_the_converter(tmp_path):
    fake = tmp_path / "weights0500.h5"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match="cosynth import-xiespp"):
        load_model(fake)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a cosynth model file") as err:
        load_model(junk)
    assert "weights_only=False" not in str(err.value)


def test_bad_output_extension_fails_before_any_work(workdir):
    result = CliRunner().invoke(app, ["predict", str(workdir / "cifs"), "-o", str(workdir / "out.xlsx")])
    assert result.exit_code == 2 and "unsupported table format" in result.output


def test_the_same_model_saved_twice_gives_the_same_bytes(tmp_path):
    """A reinstall of an unchanged model must not add a new blob to git."""
    torch.manual_seed(0)
    network = VoxelCNN()
    first = save_model(network, tmp_path / "a.pt", {"sampler": "haar"}).read_bytes()
    second = save_model(network, tmp_path / "b.pt", {"sampler": "haar"}).read_bytes()
    assert first == second
    assert load_model(tmp_path / "b.pt").family == "voxel_cnn"
