"""Training Roost/CGCNN/COSNet end to end on tiny in-memory tables (no shared data needed)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Element, Lattice, Structure

from cosynth.models.bimodal_data import predict_rows
from cosynth.models.registry import load_model
from cosynth.represent.graph import GraphCache
from cosynth.training.bimodal import FitConfig, fit, prepare

PAIRS = [(a, b) for a in ("Li", "Na", "K", "Rb", "Cs") for b in ("F", "Cl", "Br", "I")] + \
        [(a, b) for a in ("Mg", "Ca", "Sr", "Ba") for b in ("O", "S", "Se")]


def _frame() -> pd.DataFrame:
    rows = []
    for i, (a, b) in enumerate(PAIRS):
        lat = 2 * (Element(a).atomic_radius + Element(b).atomic_radius)
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        rows.append({"id": f"{a}{b}", "formula": f"{a}{b}", "cif": s.to(fmt="cif") if i % 2 == 0 else None,
                     "target": float(lat), "structure_status": "ok" if i % 2 == 0 else "none"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def splits():
    df = _frame()
    order = np.random.default_rng(0).permutation(len(df))
    parts = {"train": order[:20], "val": order[20:26], "test": order[26:]}
    return {k: df.iloc[np.sort(v)].reset_index(drop=True) for k, v in parts.items()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return GraphCache(tmp_path_factory.mktemp("graphs"))


def _cfg(**kw):
    base = dict(epochs=2, batch_size=8, threads=1)
    base.update(kw)
    return FitConfig(**base)


def test_fit_writes_a_self_describing_model(splits, cache, tmp_path):
    metrics = fit(splits, tmp_path, _cfg(), cache=cache)
    assert metrics["finished"] and metrics["epochs_run"] == 2
    for name in ("model.pt", "history.csv", "predictions.csv", "metrics.json", "config.json",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt", "representations.npz"):
        assert (tmp_path / name).exists(), name
    loaded = load_model(tmp_path / "model.pt")  # the file alone rebuilds the model
    model, meta = loaded.network, loaded.meta
    assert meta["family"] == "cosnet" and meta["config"]["nonneg"] is True
    _, seen, _ = prepare(splits, _cfg(), cache=cache)
    pred = predict_rows(model, seen["test"], meta["target_scale"])["prediction"].ravel()
    saved = pd.read_csv(tmp_path / "predictions.csv").query("split == 'test'")["prediction"].to_numpy()
    np.testing.assert_allclose(pred, saved, rtol=1e-5)
    # subsets are reported as the paper does: all / without / with structure
    for key in ("all", "without_structure", "with_structure"):
        assert f"test_mae_{key}" in metrics


def test_same_seed_same_weights_and_finished_runs_are_not_redone(splits, cache, tmp_path):
    a = fit(splits, tmp_path / "a", _cfg(seed=3), cache=cache)
    b = fit(splits, tmp_path / "b", _cfg(seed=3), cache=cache)
    assert a["test_mae_all"] == b["test_mae_all"]
    sa = torch.load(tmp_path / "a/model.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    stamp = (tmp_path / "a/metrics.json").stat().st_mtime_ns
    assert fit(splits, tmp_path / "a", _cfg(seed=3), cache=cache) == a
    assert (tmp_path / "a/metrics.json").stat().st_mtime_ns == stamp


def test_resume_gives_the_same_result_as_an_uninterrupted_run(splits, cache, tmp_path):
    fit(splits, tmp_path / "resumed", _cfg(epochs=1, seed=1), cache=cache)  # "killed" after epoch 1
    resumed = fit(splits, tmp_path / "resumed", _cfg(epochs=3, seed=1), cache=cache)
    straight = fit(splits, tmp_path / "straight", _cfg(epochs=3, seed=1), cache=cache)
    assert resumed["epochs_run"] == straight["epochs_run"] == 3
    ha = pd.read_csv(tmp_path / "resumed/history.csv")
    hb = pd.read_csv(tmp_path / "straight/history.csv")
    np.testing.assert_allclose(ha["val_mae"], hb["val_mae"], rtol=1e-6)
    assert resumed["test_mae_all"] == pytest.approx(straight["test_mae_all"], rel=1e-6)


def test_a_resume_starts_after_the_last_finished_epoch_not_the_best_one(splits, cache, tmp_path):
    # lr 1 overshoots: validation MAE is best at epoch 1 of 0-2 (deterministic for this seed);
    # last.ckpt must still be the latest epoch, so a run killed on a plateau loses nothing
    run = tmp_path / "run"
    fit(splits, run, _cfg(epochs=3, lr=1.0), cache=cache)
    ckpt = run / "checkpoints"
    best = torch.load(ckpt / "best.ckpt", map_location="cpu", weights_only=False)["epoch"]
    assert torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2 != best
    fit(splits, run, _cfg(epochs=4, lr=1.0), cache=cache)
    assert list(pd.read_csv(run / "history.csv").epoch) == [0, 1, 2, 3]


def test_augmentation_is_counted_and_composition_mode_hides_structures(splits, cache, tmp_path):
    aug = fit(splits, tmp_path / "aug", _cfg(mode="bimodal_aug", epochs=1), cache=cache)
    with_structure = int(splits["train"]["cif"].notna().sum())
    assert aug["n_train_augmented"] == with_structure  # every composition here has one structure
    assert aug["n_train_seen"] == len(splits["train"]) + with_structure
    comp = fit(splits, tmp_path / "comp", _cfg(mode="composition", epochs=1), cache=cache)
    assert comp["n_train_augmented"] == 0 and comp["n_train_with_structure_seen"] == 0
    preds = pd.read_csv(tmp_path / "comp/predictions.csv")
    assert (preds["w_c"] == 1.0).all()


def test_bad_rows_are_reported_and_the_rest_trains(splits, cache, tmp_path):
    bad = dict(splits)
    extra = pd.DataFrame([
        {"id": "badformula", "formula": "Xx2O", "cif": None, "target": 1.0, "structure_status": "none"},
        {"id": "nantarget", "formula": "NaCl", "cif": None, "target": float("nan"), "structure_status": "none"},
        {"id": "badcif", "formula": "KCl", "cif": "data_x\n_cell_length_a 2\n", "target": 6.0,
         "structure_status": "ok"},
        {"id": "sodiumnitride", "formula": "NaN", "cif": None, "target": 3.0, "structure_status": "none"},
    ])
    bad["train"] = pd.concat([splits["train"], extra], ignore_index=True)
    metrics = fit(bad, tmp_path, _cfg(epochs=1), cache=cache)
    problems = pd.read_csv(tmp_path / "problems.csv").set_index("id")
    assert set(problems.index) == {"badformula", "nantarget", "badcif"}
    assert problems.loc["badcif", "action"] == "structure ignored"
    assert problems.loc["badformula", "action"] == "skipped"
    assert metrics["finished"]
    # 20 good rows + KCl (composition only) + NaN; augmentation copies each single-structure row
    assert metrics["n_train_seen"] == 22 + int(splits["train"]["cif"].notna().sum())


@pytest.mark.parametrize("family", ["roost", "cgcnn"])
def test_single_modality_models_train(splits, cache, tmp_path, family):
    metrics = fit(splits, tmp_path, _cfg(model=family, epochs=1), cache=cache)
    assert metrics["finished"]
    meta = load_model(tmp_path / "model.pt").meta
    assert meta["family"] == family
    if family == "cgcnn":  # only rows with a structure can be used
        assert metrics["n_train_seen"] == int(splits["train"]["cif"].notna().sum())
        problems = pd.read_csv(tmp_path / "problems.csv")
        assert (problems["error"].str.contains("structure")).any()


def test_binary_classification_target(splits, cache, tmp_path):
    cls = {k: v.assign(target=(v["target"] > 6.0).astype(float)) for k, v in splits.items()}
    metrics = fit(cls, tmp_path, _cfg(task="classification", epochs=1), cache=cache)
    assert 0.0 <= metrics["test_accuracy_all"] <= 1.0
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert preds["probability"].between(0, 1).all()
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "classification"


def test_a_label_with_an_auxiliary_target_known_on_some_rows(splits, cache, tmp_path):
    """The auxiliary output learns where its target is known (NaN elsewhere costs nothing), and
    the model still predicts the label from its first output."""
    def labelled(frame):
        aux = frame["target"].where(np.arange(len(frame)) % 2 == 0)  # the lattice constant, on half the rows
        return frame.assign(target=(frame["target"] > 6.0).astype(float), aux=aux)

    cls = {k: labelled(v) for k, v in splits.items()}
    metrics = fit(cls, tmp_path, _cfg(task="classification", epochs=6), cache=cache)
    history = pd.read_csv(tmp_path / "history.csv")
    assert np.isfinite(history["train_loss"]).all() and history["val_aux_mse"].iloc[-1] < history["val_aux_mse"].iloc[0]
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.meta["config"]["n_targets"] == 2 and metrics["finished"]
    pred = loaded.predict(splits["test"][["id", "formula", "cif"]]).crystals
    saved = pd.read_csv(tmp_path / "predictions.csv").query("split == 'test'")
    np.testing.assert_allclose(pred.set_index("id")["likelihood"].reindex(saved["id"]), saved["probability"], rtol=1e-4)
    unknown = {**cls, "val": cls["val"].assign(aux=np.nan)}  # known on training rows only
    fit(unknown, tmp_path / "train-only", _cfg(task="classification", epochs=1), cache=cache)
    history = pd.read_csv(tmp_path / "train-only" / "history.csv")
    assert history.get("val_aux_mse", pd.Series(dtype=float)).isna().all()  # no value, not a false 0
    with pytest.raises(ValueError, match="classification task only"):
        fit({k: v.assign(aux=1.0) for k, v in splits.items()}, tmp_path / "regression", _cfg(), cache=cache)


def test_cli_train_cosnet_over_seeds_from_a_table(splits, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cosynth.cli import app

    monkeypatch.setenv("COSYNTH_CACHE", str(tmp_path / "cache"))
    table = pd.concat([v.assign(split=k) for k, v in splits.items()], ignore_index=True)
    table.to_csv(tmp_path / "table.csv", index=False)
    result = CliRunner().invoke(app, ["train", "cosnet", str(tmp_path / "table.csv"), "-o", str(tmp_path / "run"),
                                      "--epochs", "1", "--batch-size", "8", "--seeds", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run/seed0/model.pt").exists() and (tmp_path / "run/seed1/model.pt").exists()
    bad = CliRunner().invoke(app, ["train", "roost", str(tmp_path / "table.csv"), "-o", str(tmp_path / "r2"),
                                   "--target", "nope"])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_changed_settings_start_afresh_instead_of_resuming(splits, cache, tmp_path):
    fit(splits, tmp_path / "run", _cfg(epochs=2, seed=5, weight_decay=1e-1), cache=cache)
    changed = fit(splits, tmp_path / "run", _cfg(epochs=2, seed=5, weight_decay=1e-4), cache=cache)
    fresh = fit(splits, tmp_path / "fresh", _cfg(epochs=2, seed=5, weight_decay=1e-4), cache=cache)
    assert changed["test_mae_all"] == pytest.approx(fresh["test_mae_all"], rel=1e-6)
