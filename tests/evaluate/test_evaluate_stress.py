"""Evaluation, cross-evaluation, volume sweep and ensemble-size study on a tiny random model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from cosynth.data.table import CrystalTable
from cosynth.evaluate import ensemble as ens
from cosynth.evaluate import stress
from cosynth.evaluate.evaluate import evaluate_model, evaluate_scores, predict_table, regression_metrics
from cosynth.models.registry import save_model
from cosynth.models.voxel_cnn.model import VoxelCNN


def _structures():
    out = [Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])
           for a in (5.4, 5.64, 6.0)]
    out += [Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [.5, .5, .5]]) for a in (4.0, 4.12, 4.3)]
    out += [Structure(Lattice.hexagonal(a, 5.2), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]])
            for a in (3.1, 3.25)]
    return out


@pytest.fixture(scope="module")
def table():
    s = _structures()
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(len(s))], "label": [1, 0] * 4})
    tab = CrystalTable.from_structures(s, ids=frame["id"].tolist())
    f = tab.frame.copy()
    f["label"] = frame["label"].to_numpy()
    return tab.with_frame(f)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny.pt"
    save_model(VoxelCNN().eval(), path, {"sampler": "haar", "provenance": {"trained_by": "test: random init"}})
    return path


def test_regression_and_classification_scores_known_values():
    r = regression_metrics([1, 2, 3, np.nan], [2, 2, 5, 1])
    assert r["n"] == 3 and r["mae"] == pytest.approx(1.0) and r["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert r["r2"] == pytest.approx(1 - 5 / 2)
    c = evaluate_scores([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    m = c["metrics"]
    assert c["task"] == "classification" and m["roc_auc"] == 0.75 and m["accuracy"] == 0.5
    assert m["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert sum(c["likelihood_histogram"]["positive"]) == 2
    assert evaluate_scores([0.5, 2.0, 3.0], [1, 2, 3])["task"] == "regression"


def test_auc_standard_error_matches_the_spread_of_auc_over_resampled_test_sets():
    from sklearn.metrics import roc_auc_score

    from cosynth.evaluate.metrics import auc_standard_error

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(130), np.zeros(130)]
    aucs = [roc_auc_score(y, np.r_[rng.normal(0.6, 1, 130), rng.normal(0, 1, 130)]) for _ in range(2000)]
    se = auc_standard_error(float(np.mean(aucs)), 130, 130)
    assert 0.03 < se < 0.04  # about ±0.035 for 260 crystals at AUC ~0.66
    assert se == pytest.approx(np.std(aucs), rel=0.1)
    assert auc_standard_error(1.0, 130, 130) == 0.0


def test_consistency_counts_by_hand():
    means = np.array([[0.6, 0.7, 0.8],    # consistent positive
                      [0.4, 0.45, 0.3],   # consistent negative
                      [0.4, 0.6, 0.55]])  # inconsistent
    r = ens.consistency(means)
    assert r["inconsistent"] == 1 and r["consistent_pct"] == pytest.approx(200 / 3)
    assert r["mean_std_inconsistent"] == pytest.approx(np.std([0.4, 0.6, 0.55]))


def test_pool_means_have_the_variance_of_fresh_ensembles():
    rng = np.random.default_rng(0)
    pool = rng.uniform(0, 1, size=(400, 200))  # variance 1/12 per rotation
    for size in (1, 4, 16):
        m = ens.pool_means(pool, size, 50, seed=1)
        assert m.shape == (400, 50)
        assert m.var(axis=1).mean() == pytest.approx(pool.var(axis=1).mean() / size, rel=0.15)
    assert np.array_equal(ens.pool_means(pool, 5, 10, 3), ens.pool_means(pool, 5, 10, 3))


def test_evaluate_model_writes_everything_and_reports_rows_without_structure(table, model_file, tmp_path):
    frame = pd.concat([table.frame, pd.DataFrame([{"id": "comp-only", "formula": "NaCl", "label": 1}])],
                      ignore_index=True)
    tab = CrystalTable.from_frame(frame)
    r = evaluate_model(model_file, tab, "label", ensemble=2, out_dir=tmp_path / "ev")
    assert r["errors"] == 1 and r["metrics"]["n"] == len(table)
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert pred.loc[pred.id == "comp-only", "error"].item() == "no structure in this row"
    saved = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert saved["metrics"]["accuracy"] == pytest.approx(r["metrics"]["accuracy"])
    assert (tmp_path / "ev" / "figures" / "likelihood_histogram.png").exists()
    assert (tmp_path / "ev" / "evaluate.html").stat().st_size > 10000


def test_cross_evaluation_matrix_and_resume(table, model_file, tmp_path, monkeypatch):
    half = table.with_frame(table.frame.iloc[:4].reset_index(drop=True))
    tables = {"all": table, "half": half}
    df = stress.cross_evaluate({"a": model_file, "b": model_file}, tables, "label", ensemble=2, out_dir=tmp_path)
    assert len(df) == 4 and set(df["table"]) == {"all", "half"} and df["n"].tolist() == [8, 4, 8, 4]
    # same model, same seed: identical rows for a and b
    assert df[df.model == "a"]["accuracy"].tolist() == df[df.model == "b"]["accuracy"].tolist()
    monkeypatch.setattr(stress, "predict_table", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = stress.cross_evaluate({"a": model_file, "b": model_file}, tables, "label", ensemble=2, out_dir=tmp_path)
    pd.testing.assert_frame_equal(df, again)
    edited = table.with_frame(table.frame.assign(cif=table.frame["cif"].str.replace("5.4", "5.5")))
    with pytest.raises(AssertionError, match="recomputed"):  # an edited table is never served stale predictions
        stress.cross_evaluate({"a": model_file}, {"all": edited}, "label", ensemble=2, out_dir=tmp_path)
    stress.write_cross(df, tmp_path)
    assert (tmp_path / "cross_evaluation.html").exists()


def test_volume_sweep_scales_density_and_factor_one_is_the_plain_prediction(table, model_file, tmp_path):
    df, dens = stress.volume_sweep({"m": model_file}, table, "label", factors=(0.5, 1.0), ensemble=2,
                                   out_dir=tmp_path)
    d1, d05 = np.array(dens["density"][1.0]), np.array(dens["density"][0.5])
    assert np.allclose(d05, 2 * d1)
    plain = predict_table(model_file, table, ensemble=2)
    (one_path,) = (tmp_path / "predictions").glob("m__volume1__E2_s0_*.csv")
    one = pd.read_csv(one_path)
    assert np.allclose(one["likelihood"], plain["likelihood"])
    stress.write_sweep(df, dens, tmp_path)
    saved = json.loads((tmp_path / "volume_sweep.json").read_text())
    assert [r["volume_factor"] for r in saved["rows"]] == [0.5, 1.0]


def test_ensemble_study_modes_and_sobol(table, model_file, tmp_path):
    from cosynth.models.registry import load_model

    net = load_model(model_file).network
    s, ids = table.structures()[:3], table.frame["id"].tolist()[:3]
    pool = ens.ensemble_study(net, s, ids, sizes=(1, 4), repeats=3, pool_size=8)
    assert [r["E"] for r in pool["rows"]] == [1, 4] and pool["pool_size"] == 8
    fresh = ens.ensemble_study(net, s, ids, sizes=(1, 2), repeats=2, mode="fresh", samplers=("haar", "sobol"))
    assert {(r["sampler"], r["E"]) for r in fresh["rows"]} == {("haar", 1), ("haar", 2), ("sobol", 1), ("sobol", 2)}
    assert fresh == ens.ensemble_study(net, s, ids, sizes=(1, 2), repeats=2, mode="fresh", samplers=("haar", "sobol"))
    ens.write_study(fresh, tmp_path)
    assert "equivalent_sizes" in json.loads((tmp_path / "ensemble_study.json").read_text())
    with pytest.raises(ValueError, match="repeats must be at least 2"):
        ens.ensemble_study(net, s, ids, repeats=1)
    with pytest.raises(ValueError, match="use --mode fresh"):
        ens.ensemble_study(net, s, ids, samplers=("sobol",))


def test_sobol_rotations_cover_so3_more_evenly_than_random():
    from cosynth.represent.voxel import angles_to_matrix, sample_rotations

    def error(sampler, seed):  # E[R] = 0 for a uniform distribution on SO(3)
        return np.abs(angles_to_matrix(sample_rotations(sampler, 256, np.random.default_rng(seed))).mean(0)).max()

    sobol = np.mean([error("sobol", k) for k in range(10)])
    haar = np.mean([error("haar", k) for k in range(10)])
    assert sobol < haar / 3


def test_cli_evaluate_and_stress(table, model_file, tmp_path):
    from cosynth.cli import app

    path = tmp_path / "t.parquet"
    table.write(path)
    run = CliRunner()
    res = run.invoke(app, ["evaluate", str(path), "-l", "label", "-m", str(model_file), "-E", "2", "-o",
                           str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "accuracy=" in res.output
    res = run.invoke(app, ["evaluate", str(path), "-l", "label", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "exactly one of --model or --score" in res.output
    res = run.invoke(app, ["stress", "volume", str(path), "-m", f"tiny={model_file}", "-l", "label", "--factors",
                           "0.8,1", "-E", "2", "-o", str(tmp_path / "vs")])
    assert res.exit_code == 0, res.output
    res = run.invoke(app, ["stress", "cross", f"mine={path}", "-m", str(model_file), "-l", "label", "-E", "2",
                           "-o", str(tmp_path / "cx")])
    assert res.exit_code == 0, res.output
    assert "mine" in res.output, res.output
    res = run.invoke(app, ["report", str(tmp_path / "ev"), str(tmp_path / "vs"), str(tmp_path / "cx"),
                           "-o", str(tmp_path / "all.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "all.html").read_text().count("<section") == 3


def test_applicability_domain_scores_in_predict(table, tmp_path):
    """A model file with training statistics adds ad_descriptor/ad_latent to predictions: training
    crystals score like the training data, a crystal unlike any of them scores near 1."""
    from cosynth.models.domain import training_domain
    from cosynth.predict import predict

    torch.manual_seed(1)
    net = VoxelCNN().eval()
    train = _structures()[:6]
    ids = [f"t{i}" for i in range(6)]
    domain = training_domain(net, ids, train)
    path = save_model(net, tmp_path / "m.pt", {"sampler": "haar", "provenance": {"trained_by": "test"}, "domain": domain})
    far = Structure(Lattice.cubic(3.2), ["U", "U"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # dense, heavy
    far.properties = {"id": "far"}
    near = train[1].copy()
    near.properties = {"id": "near"}
    out = predict([near, far], path, ensemble=2).crystals.set_index("id")
    assert out.loc["far", "ad_descriptor"] == 1.0 and out.loc["far", "ad_latent"] >= 0.5
    assert out.loc["near", "ad_descriptor"] < 0.9
    plain = predict([near, far], net, ensemble=2).crystals
    assert "ad_descriptor" not in plain.columns
    assert np.allclose(plain["likelihood"], out["likelihood"].to_numpy())  # scores never change predictions


def test_a_large_training_set_is_described_by_a_seeded_sample(monkeypatch):
    """Past DOMAIN_CRYSTALS training crystals the domain keeps a seeded sample of that size."""
    from cosynth.models import domain as ad

    monkeypatch.setattr(ad, "DOMAIN_CRYSTALS", 4)
    net = VoxelCNN().eval()
    train = _structures()[:6]
    ids = [f"t{i}" for i in range(6)]
    first, again = ad.training_domain(net, ids, train), ad.training_domain(net, ids, train)
    assert len(first["train_latent"]) == len(first["train_descriptors"]) == 4
    assert np.array_equal(first["train_latent"], again["train_latent"])


def test_evaluation_uses_the_sampler_stored_in_the_model_file(table, tmp_path):
    """An imported XIE-SPP model must be evaluated with its own sampler, never a silent haar fallback."""
    from cosynth.evaluate.evaluate import predict_table
    from cosynth.models.registry import load_model
    from cosynth.predict import predict

    torch.manual_seed(3)
    path = save_model(VoxelCNN().eval(), tmp_path / "xiespp_like.pt", {"sampler": "xiespp"})
    via_table = predict_table(load_model(path), table, ensemble=3)
    via_file = predict_table(path, table, ensemble=3)
    structures = table.structures()
    for s, rid in zip(structures, table.frame["id"]):
        s.properties = {"id": rid}
    explicit = predict(structures, path, ensemble=3, sampler="xiespp").crystals
    haar = predict(structures, path, ensemble=3, sampler="haar").crystals
    assert np.allclose(via_table["likelihood"], explicit["likelihood"])
    assert np.allclose(via_file["likelihood"], explicit["likelihood"])
    assert not np.allclose(via_table["likelihood"], haar["likelihood"])
