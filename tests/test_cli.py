"""The `cosynth` command line, end to end through typer's runner."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.cli import app

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
runner = CliRunner()


def need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing but CI is set: the shared data must be present")
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="module")
def imported_model(tmp_path_factory) -> Path:
    weights = need(SHARED / "reference/xiespp/weights0500.h5")
    out = tmp_path_factory.mktemp("model") / "xiespp.pt"
    res = runner.invoke(app, ["import-xiespp", str(weights), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def gan_cifs(tmp_path_factory) -> list[Path]:
    tar = need(SHARED / "data/hypothetical_structures/xiespp_example_polymorph_cifs.tar.gz")
    tmp = tmp_path_factory.mktemp("cifs")
    with tarfile.open(tar) as t:
        t.extractall(tmp, filter="data")
    return sorted(tmp.rglob("GaN_*.cif"))


def test_predict_with_imported_weights_reproduces_reference(imported_model, gan_cifs, tmp_path):
    ref = pd.read_csv(SHARED / "reference/xiespp/parity_dev.csv")
    rot = tmp_path / "rot.csv"
    ref[["alpha_deg", "beta_deg", "gamma_deg"]].drop_duplicates().rename(
        columns=lambda c: c.replace("_deg", "")).to_csv(rot, index=False)
    out, per = tmp_path / "out.parquet", tmp_path / "per.csv"
    res = runner.invoke(app, ["predict", *map(str, gan_cifs), "--model", str(imported_model), "--sampler", "xiespp",
                              "--rotations", str(rot), "--per-rotation", str(per), "-o", str(out)])
    assert res.exit_code == 0, res.output
    crystals = pd.read_parquet(out)
    assert list(crystals.id) == ["GaN_12", "GaN_9"] and (crystals.n_rotations == 6).all()
    rows = pd.read_csv(per)
    rows["cif_name"] = rows.id + ".cif"
    merged = rows.merge(ref, on=["cif_name", "alpha_deg", "beta_deg", "gamma_deg"])
    assert len(merged) == 12
    assert (merged.probability_x - merged.probability_y).abs().max() <= 1e-6  # measured 3.87e-07 (fp32)


def test_predict_bad_file_is_a_row_and_stdout_is_csv(imported_model, gan_cifs, tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 3.0\nloop_\n_atom_site_label\n")
    res = runner.invoke(app, ["predict", str(gan_cifs[0]), str(bad), "--model", str(imported_model), "-E", "2"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.count(",") >= 8]
    assert lines[0].startswith("id,formula,modality,likelihood,std,n_rotations,consistent,label,status,error,source")
    assert lines[1].startswith("GaN_12,GaN,") and ",ok," in lines[1]
    assert lines[2].startswith("broken,") and ",error," in lines[2]


def test_usage_errors_exit_2_with_a_message(imported_model, gan_cifs):
    res = runner.invoke(app, ["predict", str(gan_cifs[0]), "--model", str(imported_model), "--sampler", "euler"])
    assert res.exit_code == 2 and "haar, sobol or xiespp" in res.output
    res = runner.invoke(app, ["predict", str(gan_cifs[0]), "--model", "no-such-model"])
    assert res.exit_code == 2 and "no-such-model" in res.output


def test_import_rejects_a_non_hdf5_file(tmp_path):
    junk = tmp_path / "w.h5"
    junk.write_bytes(b"not hdf5")
    res = runner.invoke(app, ["import-xiespp", str(junk), "-o", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "cannot read" in res.output
    assert not (tmp_path / "m.pt").exists()


def test_train_rejects_a_bad_split(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("id,cif,label\n")
    res = runner.invoke(app, ["train", "voxel", str(table), "--label", "label", "-o", str(tmp_path / "run"),
                              "--split", "60-20-20"])
    assert res.exit_code == 2 and "--split" in res.output


def test_every_bundled_model_loads_by_name_with_its_card():
    from cosynth.models.registry import DEFAULT_MODEL, FAMILIES, PRETRAINED_DIR, bundled_models, load_model

    assert DEFAULT_MODEL in bundled_models()
    for name in bundled_models():
        loaded = load_model(name)
        assert loaded.family in FAMILIES and loaded.task == "classification"
        assert 0.0 <= loaded.metrics["roc_auc"] <= 1.0
        card = (PRETRAINED_DIR / f"{name}.md").read_text()
        assert f"{loaded.metrics['roc_auc']:.3f}" in card  # the card states the stored test AUC
    default = load_model(DEFAULT_MODEL)
    assert default.meta["metrics"]["benchmark_split"] and 0.0 < default.meta["threshold"] < 1.0
    assert set(default.meta["calibration"]) == {"a", "b"}
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and f"{DEFAULT_MODEL} (default): family={default.family}" in listed.output
    assert f"test AUC={default.metrics['roc_auc']:.3f}" in listed.output


def test_demo_runs_the_bundled_model_on_made_hypothetical_and_absurd_crystals():
    from cosynth.cli.predict import MADE, demo_crystals

    crystals = demo_crystals()
    assert all(s.is_ordered for _, s in crystals) and len({s.properties["id"] for _, s in crystals}) == len(crystals)
    # the textbook crystals are what they say: a rock salt has four formula units per cell, corundum six
    assert [len(s) for _, s in crystals[:1]] == [8] and crystals[len(MADE) - 2][1].composition.reduced_formula == "Al2O3"
    assert len(crystals[len(MADE) - 2][1]) == 30
    res = runner.invoke(app, ["demo", "--ensemble", "2"])
    assert res.exit_code == 0, res.output
    assert "SrTiO3_perov" in res.output and "likelihood" in res.output
    assert "ROC AUC" in res.output and "absurd" in res.output and "made" in res.output  # the three groups
    assert "Mean likelihood by group (made / hypothetical / absurd): cosynth-synth" in res.output


def test_demo_shows_the_published_model_beside_the_default(shared_path):
    weights = shared_path("reference/xiespp/weights0500.h5")
    res = runner.invoke(app, ["demo", "--ensemble", "2", "--xiespp-weights", str(weights)])
    assert res.exit_code == 0, res.output
    assert "; published XIE-SPP " in res.output


def test_baselines_command_scores_the_test_rows(tmp_path, mp_sample):
    import json

    import numpy as np

    frame = mp_sample(per_class=12, max_sites=8)
    frame["split"] = np.where(np.arange(len(frame)) % 2 == 0, "train", "test")
    frame["e_above_hull"] = np.where(frame["label"] == 1, 0.0, 0.2) + np.arange(len(frame)) * 1e-3
    table = tmp_path / "t.parquet"
    frame.to_parquet(table)
    result = CliRunner().invoke(app, ["baselines", str(table), "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    rows = {r["score"]: r for r in json.loads((tmp_path / "b.json").read_text())["baselines"]}
    assert rows["e_above_hull"]["roc_auc"] == 1.0 and rows["e_above_hull"]["test_rows"] == 12
    assert "structure_descriptors" in rows
