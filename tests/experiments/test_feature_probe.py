"""The linear probe on frozen voxel-CNN features: it must find a label the images plainly carry."""

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.data.table import structure_to_cif
from cosynth.experiments import feature_probe as fp


@pytest.fixture()
def chemistry_table(tmp_path):
    """Rock salts whose label is their chemistry (NaCl vs KBr), which the voxel channels encode."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        label = i % 2
        species, a = (["Na", "Cl"], 5.64) if label else (["K", "Br"], 6.60)
        cell = Structure(Lattice.cubic(a + rng.uniform(-0.05, 0.05)), species, [[0, 0, 0], [0.5, 0.5, 0.5]])
        rows.append({"id": f"c{i}", "label": label, "split": ["train", "train", "val", "test", "train"][i % 5],
                     "cif": structure_to_cif(cell)})
    rows.append({"id": "broken", "label": 1, "split": "train", "cif": "not a cif"})
    path = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_probe_finds_a_label_the_images_carry_and_skips_broken_rows(chemistry_table, tmp_path):
    out = tmp_path / "probe.json"
    from typer.testing import CliRunner

    from cosynth.cli import app

    res = CliRunner().invoke(app, ["probe", str(chemistry_table), "--model", "random", "--id-column", "id",
                                   "--structure-column", "cif", "--rotations", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["skipped"] == 1
    (row,) = result["rows"]
    assert row["model"] == "random" and row["features"] == 64
    assert row["train_rows"] == 18 and row["val_rows"] == 6 and row["test_rows"] == 6
    assert row["val_auc"] > 0.9 and row["test_auc"] > 0.9


def test_named_models(tmp_path):
    from cosynth.models.registry import save_model

    name, net = fp.named_model("random", seed=3)
    assert name == "random" and not net.training
    same = fp.named_model("random", seed=3)[1]
    assert all(np.array_equal(a.detach(), b.detach()) for a, b in zip(net.parameters(), same.parameters()))
    save_model(net, tmp_path / "m.pt", {"sampler": "haar", "provenance": {"test": True}})
    name, loaded = fp.named_model(f"mine={tmp_path / 'm.pt'}")
    assert name == "mine" and np.array_equal(loaded.conv1.weight.detach(), net.conv1.weight.detach())
