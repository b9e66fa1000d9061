"""Training: deterministic, resumable after a kill with the same final weights, honest outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cosynth.training.voxel import TrainConfig, load_labelled, stratified_split, train_voxel


@pytest.fixture(scope="module")
def small_table(mp_sample) -> pd.DataFrame:
    return mp_sample(6, 4, nrows=400)  # small cells keep each image cheap


def config(**kw) -> TrainConfig:
    base = dict(label="label", epochs=2, batch_size=4, seed=3, id_column="material_id", test_ensemble=2,
                split=(50, 25, 25))
    base.update(kw)
    return TrainConfig(**base)


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_resume_after_interruption_gives_the_same_model(small_table, tmp_path):
    full = tmp_path / "full"
    train_voxel(small_table, full, config(), progress=False)
    part = tmp_path / "part"
    train_voxel(small_table, part, config(epochs=1), progress=False)  # "killed" after epoch 1
    train_voxel(small_table, part, config(epochs=2), progress=False)  # same command, resumes
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist_full, hist_part = pd.read_csv(full / "history.csv"), pd.read_csv(part / "history.csv")
    assert list(hist_part.epoch) == [0, 1]
    pd.testing.assert_frame_equal(hist_full.drop(columns="seconds"), hist_part.drop(columns="seconds"))


def test_last_checkpoint_is_the_latest_epoch_even_on_a_plateau(small_table, tmp_path):
    # lr 0: the validation loss never improves after epoch 0, so only the "best" checkpoint stays
    # behind; a resume must still start after the last finished epoch, not after the best one.
    run = tmp_path / "run"
    train_voxel(small_table, run, config(epochs=3, lr=0.0), progress=False)
    ckpt = run / "checkpoints"
    assert torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2
    assert torch.load(ckpt / "best.ckpt", map_location="cpu", weights_only=False)["epoch"] == 0
    train_voxel(small_table, run, config(epochs=4, lr=0.0), progress=False)
    assert list(pd.read_csv(run / "history.csv").epoch) == [0, 1, 2, 3]


def test_table_split_column_is_used_as_given(small_table, tmp_path):
    table = small_table.copy()
    table["split"] = ["train"] * 8 + ["validation", "val", "test", "test"]
    train_voxel(table, tmp_path / "run", config(epochs=1, split_column="split"), progress=False)
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert split.split.tolist() == ["train"] * 8 + ["val", "val", "test", "test"]
    table.loc[0, "split"] = "holdout"
    with pytest.raises(ValueError, match="holdout"):
        train_voxel(table, tmp_path / "bad", config(epochs=1, split_column="split"), progress=False)


def test_run_dir_contents_and_model_file(small_table, tmp_path):
    from cosynth.models.registry import load_model

    metrics = train_voxel(small_table, tmp_path / "run", config(epochs=1), progress=False)
    run = tmp_path / "run"
    for name in ("split.csv", "history.csv", "model.pt", "metrics.json", "config.json"):
        assert (run / name).exists(), name
    hist = pd.read_csv(run / "history.csv")
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "active_conv2", "active_conv3"} <= set(hist.columns)
    assert ((hist.active_conv2 > 0) & (hist.active_conv2 <= 1)).all()  # a freshly initialised network is alive
    assert "warning" not in metrics
    split = pd.read_csv(run / "split.csv")
    assert set(split.split) == {"train", "val", "test"}
    assert metrics["n_test"] == (split.split == "test").sum()
    meta = load_model(run / "model.pt").meta
    assert meta["image"]["sampler"] == "haar" and meta["provenance"]["n_train"] == (split.split == "train").sum()


    from cosynth.evaluate.evaluate import test_run

    tested = test_run(run, small_table, ensemble=2)  # through the model file, keyed on crystal ids
    assert 0.0 <= tested["roc_auc"] <= 1.0 and tested["n_test"] == metrics["n_test"]
    preds = pd.read_csv(run / "test_predictions.csv", dtype={"id": str})
    assert list(preds["id"]) == list(split.loc[split.split == "test", "id"].astype(str))
    assert preds["likelihood"].between(0, 1).all()
    assert load_model(run / "model.pt").metrics["roc_auc"] == tested["roc_auc"]
    assert train_voxel(small_table, run, config(epochs=1), progress=False)["finished"]  # read, not redone


def test_bad_rows_are_reported_not_fatal(small_table, tmp_path):
    df = small_table.copy()
    df.loc[0, "cif"] = "data_broken\n_cell_length_a 3\n"
    df.loc[1, "label"] = np.nan
    ids, structures, labels, errors = load_labelled(df, "label", id_column="material_id")
    assert len(ids) == len(df) - 2
    assert set(errors) == {df.material_id[0], df.material_id[1]}
    assert "not 0 or 1" in errors[df.material_id[1]]


def test_missing_label_column_is_a_clear_error(small_table):
    with pytest.raises(ValueError, match="label column 'nope'"):
        load_labelled(small_table, "nope")


def test_split_is_stratified_and_seeded():
    y = np.array([0] * 50 + [1] * 50)
    a, b = stratified_split(y, (60, 20, 20), 1), stratified_split(y, (60, 20, 20), 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "val", "test")] == [60, 20, 20]
    assert y[a["test"]].mean() == 0.5
    c = stratified_split(y, (60, 20, 20), 2)
    assert not np.array_equal(a["test"], c["test"])


def test_loss_weights_change_training_and_bad_weights_are_row_errors(small_table, tmp_path):
    from cosynth.training.voxel import load_weighted

    df = small_table.copy()
    df["w"] = np.where(df["label"] == 1, 3.0, 0.5)
    df.loc[df.index[0], "w"] = -1.0
    ids, _, _, w, errors = load_weighted(df, "label", weight_column="w", id_column="material_id")
    assert df["material_id"].iloc[0] in errors and "not a finite number ≥ 0" in errors[df["material_id"].iloc[0]]
    assert len(ids) == len(df) - 1 and set(w.tolist()) == {3.0, 0.5}
    df.loc[df.index[0], "w"] = 1.0
    train_voxel(df, tmp_path / "plain", config(epochs=1), progress=False)
    train_voxel(df, tmp_path / "weighted", config(epochs=1, weight_column="w"), progress=False)
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "weighted")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="weight column 'nope'"):
        train_voxel(df, tmp_path / "x", config(epochs=1, weight_column="nope"), progress=False)


def test_a_collapsed_network_is_measured_and_named():
    """Dead convolutions (every ReLU off: no gradient, one score for every crystal) show up in the
    activity the trainer records, and the note tells the user what to change."""
    from pymatgen.core import Lattice, Structure

    from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN
    from cosynth.represent.voxel import CrystalImager
    from cosynth.training.voxel import collapse_note

    torch.manual_seed(0)
    net = VoxelCNN().train()
    salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    batch = SparseBatch.from_images([CrystalImager.from_structure(salt).image(np.array([0.1, 0.2, 0.3]), "haar")])
    net(batch)
    assert net.activity["conv2"] > 0.01 and net.activity["conv3"] > 0.01
    with torch.no_grad():
        net.conv2.bias.fill_(-10.0)
    net(batch)
    assert net.activity["conv2"] == 0.0
    note = collapse_note({"epoch": 3, "active_conv2": 0.0, "active_conv3": 0.4})
    assert "epoch 3" in note and "conv2 0.00 %" in note and "--lr" in note and "conv3" not in note
    assert collapse_note({"epoch": 3, "active_conv2": 0.3, "active_conv3": 0.4}) is None
    assert collapse_note({"epoch": 0, "train_loss": 0.69}) is None  # histories from before the columns existed
