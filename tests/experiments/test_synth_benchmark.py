"""The synthesizability benchmark: its metrics, its split, and a quick end-to-end run with real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosynth.evaluate.benchmark import (
    expected_calibration_error,
    polymorph_pair_auc,
    polymorph_pair_shares,
    score_report,
    threshold_from_validation,
    within_origin_auc,
)


def _shared(shared_path) -> Path:
    return shared_path("data/mp_extra_structures").parents[1]


def test_shortcut_scores_get_chance_where_the_shortcut_cannot_help():
    rng = np.random.default_rng(0)
    origin = np.repeat(["a", "b"], 200)
    y = np.concatenate([rng.random(200) < 0.9, rng.random(200) < 0.2]).astype(int)
    origin_score = np.where(origin == "a", 0.9, 0.2)  # knows only the origin
    mean, per = within_origin_auc(y, origin_score, origin)
    assert mean == pytest.approx(0.5) and set(per) == {"a", "b"}
    formula = np.repeat(np.arange(100), 4).astype(str)
    composition_score = np.repeat(rng.random(100), 4)  # one value per formula
    auc, pairs = polymorph_pair_auc(y, composition_score, formula)
    assert pairs > 0 and auc == pytest.approx(0.5)
    assert polymorph_pair_auc(y, y.astype(float), formula)[0] == 1.0
    assert polymorph_pair_auc(y, origin_score, formula, origin)[0] == pytest.approx(0.5)


def test_polymorph_pairs_count_each_group_once_and_stay_within_one_origin():
    # one formula with 10 x 10 polymorph pairs all ranked wrong, nine with one pair each ranked right
    y = np.array([1] * 10 + [0] * 10 + [1, 0] * 9)
    p = np.array([0.2] * 10 + [0.8] * 10 + [0.9, 0.1] * 9)
    formula = np.array(["SiO2"] * 20 + [f"F{i}" for i in range(9) for _ in range(2)])
    shares = polymorph_pair_shares(y, p, formula)
    assert shares["mean"] == pytest.approx(0.9) and shares["right"] / shares["pairs"] == pytest.approx(9 / 109)
    assert (shares["pairs"], shares["groups"], shares["largest_group"], shares["largest_pairs"]) == (109, 10, "SiO2", 100)
    assert polymorph_pair_auc(y, p, formula) == (pytest.approx(0.9), 109)
    # the ICSD polymorph of each formula comes from one file, the theoretical one from another
    origin = np.where(y == 1, "icsd_rich", "theory_rich")
    by_origin = np.where(origin == "icsd_rich", 0.9, 0.1)
    assert polymorph_pair_auc(y, by_origin, formula)[0] == 1.0  # any origin: the origin shortcut wins
    assert np.isnan(polymorph_pair_auc(y, by_origin, formula, origin)[0])  # no pair within one origin
    origin = np.array(["a"] * 20 + ["b", "b"] * 9)
    report = score_report(y, p, origin, formula, threshold=0.5, n_boot=50)
    assert report["metrics"]["polymorph_pair_auc"] == pytest.approx(0.9)
    assert report["metrics"]["polymorph_pair_auc_any_origin"] == pytest.approx(0.9)
    low, high = report["ci"]["polymorph_pair_auc"]
    assert low <= 0.9 <= high and report["polymorph_pairs"]["largest_group"] == "SiO2 (a)"


def test_calibration_error_and_threshold():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.15
    t = threshold_from_validation(np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8]))
    assert 0.3 < t <= 0.6


def test_score_report_has_intervals_around_its_values():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    p = np.clip(0.5 + (y - 0.5) * 0.3 + rng.normal(0, 0.2, 600), 0, 1)
    report = score_report(y, p, np.repeat(["x", "z"], 300), np.repeat(np.arange(200), 3).astype(str),
                          threshold=0.5, n_boot=50)
    for key in ("roc_auc", "within_origin_auc", "polymorph_pair_auc"):
        low, high = report["ci"][key]
        assert low <= report["metrics"][key] <= high
    assert report["n"] == 600 and report["per_origin"]["x"]["n"] == 300


def test_frozen_split_is_grouped_stratified_and_leak_free(shared_path):
    from cosynth.data.synth_benchmark import benchmark_table, composition_rows, leakage_checks, split_fingerprint

    shared = _shared(shared_path)
    frame = benchmark_table(shared / "data", seed=0)
    assert len(frame) == 19339 and frame["id"].is_unique
    assert leakage_checks(frame) == {"rows": 19339, "ids_in_two_splits": 0, "formulas_in_two_splits": 0,
                                     "duplicate_ids": 0}
    rates = frame.groupby("split")["label"].mean()
    assert rates.max() - rates.min() < 0.02
    assert frame["split"].value_counts(normalize=True)["train"] == pytest.approx(0.6, abs=0.02)
    assert frame["label_source"].iloc[0] in ("cpul", "pucgcnn", "syncotrain")
    assert split_fingerprint(benchmark_table(shared / "data", seed=0)) == split_fingerprint(frame)
    comps = composition_rows(shared / "data", exclude_formulas=set(frame["formula"]))
    assert not set(comps["formula"]) & set(frame["formula"]) and (comps["split"] == "train").all()


@pytest.mark.slow
def test_quick_benchmark_end_to_end_and_its_exported_model(tmp_path, shared_path):
    from cosynth.experiments.synth_benchmark import BenchmarkConfig, benchmark_synth, quick_config, tree_recipe
    from cosynth.models.registry import load_model

    shared = _shared(shared_path)
    out, models = tmp_path / "report", tmp_path / "models"
    result = benchmark_synth(out, work=tmp_path / "work", data_root=shared / "data",
                             config=BenchmarkConfig.quick_run(),
                             xiespp_weights=shared / "reference" / "xiespp" / "weights0500.h5", install=models)
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["winner"] == result["winner"] and saved["leakage"]["formulas_in_two_splits"] == 0
    assert {"origin_only", "density_only", "descriptor_trees", "roost_composition", "xiespp_published"} <= set(
        saved["scores"])
    assert saved["scores"]["origin_only"]["metrics"]["within_origin_auc"] == pytest.approx(0.5)
    readme = (out / "README.md").read_text()
    assert "QUICK RUN" in readme and "## Candidates" in readme and "one formula and one origin" in readme
    assert saved["voxel"]["epochs_run"] == 1 and saved["voxel"]["finished"] and "voxel_cnn" in saved["scores"]
    assert "1 of 1 epochs" in saved["candidate_words"]["voxel_cnn"]
    assert saved["candidate_words"]["cgcnn"].endswith(", 2 epochs (best validation loss kept)")
    trees = "descriptor_trees_per_crystal"  # a candidate judged on its own, shipped only inside the stack
    assert trees in saved["candidates"] and trees not in saved["baselines"] and saved["winner"] != trees
    assert "inside the stack" in saved["candidate_words"][trees] and "coordination_mean" in saved["candidate_words"][trees]
    assert saved["trees"]["recipe"] == tree_recipe(BenchmarkConfig.quick_run())
    made_up = saved["decoys"]  # decoys of test positives: composition and origin alone cannot tell them apart
    assert made_up["origin_only"]["all"] == 0.5 and made_up["roost_composition"]["all"] == 0.5
    assert {"stack", "xiespp_published", "density_only", trees} <= set(made_up) and made_up["stack"]["n"] > 0
    assert "Made-up crystals" in readme
    energy = load_model(tmp_path / "work" / "runs" / "cosnet_energy" / "model.pt")  # label + energy outputs
    assert energy.meta["config"]["n_targets"] == 2 and "energy above the hull" in saved["candidate_words"]["cosnet_energy"]
    table = pd.read_parquet(tmp_path / "work" / "benchmark.parquet")  # the scores kept beside the report
    committed = pd.read_parquet(out / "scores.parquet")
    assert committed["id"].tolist() == table.loc[table["split"] != "train", "id"].tolist()
    assert set(saved["scores"]) <= set(committed.columns)
    voxel = load_model(models / "cosynth-synth-voxel.pt")  # judged as it ships: a mean over rotations
    assert not saved["scores"]["voxel_cnn"]["calibrated"] and "calibration" not in voxel.meta
    assert voxel.meta["threshold"] == saved["scores"]["voxel_cnn"]["threshold"]
    assert "not recalibrated" in (models / "cosynth-synth-voxel.md").read_text()
    for figure in ("roc", "reliability", "per_origin"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 5000
    default = load_model(models / "cosynth-synth.pt")
    assert default.meta["threshold"] == saved["scores"][result["winner"]]["threshold"]
    assert (models / "cosynth-synth.md").read_text().startswith("# Model card: cosynth-synth")
    stack = load_model(tmp_path / "work" / "runs" / "stack" / "model.pt")  # its test scores are its file's
    assert stack.family == "stack" and saved["stack"]["inputs"] and "stack" in saved["scores"]
    test = table[table["split"] == "test"].head(4)
    shipped = stack.predict(test[["id", "formula", "cif"]]).crystals
    kept = committed.set_index("id").loc[test["id"], "stack"].to_numpy()
    np.testing.assert_allclose(np.log(shipped["likelihood"] / (1 - shipped["likelihood"])), kept, atol=1e-6)
    pred = default.predict(pd.DataFrame({"formula": ["NaCl"]})).crystals
    if default.inputs == "structure":
        assert pred["status"].iloc[0] == "error" and "needs a structure" in pred["error"].iloc[0]
    else:
        assert pred["status"].iloc[0] == "ok" and 0 <= pred["likelihood"].iloc[0] <= 1

    # a later run on a new work folder reuses the kept scores and trains only the new candidate
    with pytest.raises(ValueError, match="other settings \\(epochs\\)"):
        benchmark_synth(out, work=tmp_path / "other", data_root=shared / "data", reuse_scores=True,
                        config=quick_config(epochs=3))
    more = quick_config(candidates=("cgcnn", "cosnet_balanced", "cosnet_energy", "cgcnn_balanced"))
    again = benchmark_synth(out, work=tmp_path / "later", data_root=shared / "data", config=more,
                            xiespp_weights=shared / "reference" / "xiespp" / "weights0500.h5", install=models,
                            reuse_scores=True)
    trained = {p.name for p in (tmp_path / "later" / "runs").iterdir()}  # the new one, and the stack refitted
    stack = again["stack"]
    assert trained == {"cgcnn_balanced", "stack", *stack["retrained_members"]}
    assert set(stack["retrained_members"]) <= set(stack["inputs"]) - {"cgcnn_balanced"}
    for name in ("origin_only", "xiespp_published", "cgcnn", "voxel_cnn"):
        assert again["scores"][name]["metrics"] == saved["scores"][name]["metrics"]
    assert "cgcnn_balanced" in again["scores"]
    if "cgcnn" not in stack["retrained_members"]:  # (a retrained member's seconds are its new training's)
        assert again["seconds"]["cgcnn"] == saved["seconds"]["cgcnn"]
    assert load_model(models / "cosynth-synth.pt").meta["provenance"]["benchmark"].endswith(f"({again['winner']})")

    # with nothing new, a rerun on a new work folder only judges and writes: the stack is not refitted,
    # and reinstalling the unchanged models leaves their files' bytes as they were
    shipped_bytes = (models / "cosynth-synth.pt").read_bytes()
    same = benchmark_synth(out, work=tmp_path / "unchanged", data_root=shared / "data", config=more,
                           xiespp_weights=shared / "reference" / "xiespp" / "weights0500.h5", install=models,
                           reuse_scores=True)
    assert not (tmp_path / "unchanged" / "runs").exists()
    assert same["stack"] == again["stack"] and same["scores"][same["winner"]] == again["scores"][again["winner"]]
    assert (models / "cosynth-synth.pt").read_bytes() == shipped_bytes


def test_a_kept_descriptor_table_without_this_versions_descriptors_is_computed_again(tmp_path):
    from cosynth.experiments.synth_benchmark import kept_descriptors
    from cosynth.represent.descriptors import LOCAL_STRUCTURE, compute_descriptors

    path = tmp_path / "descriptors.parquet"
    assert kept_descriptors(path) is None
    described = compute_descriptors(["NaCl", "SiO2"])
    described.to_parquet(path)
    assert kept_descriptors(path)["n_elements"].tolist() == [2, 2]
    described.drop(columns=list(LOCAL_STRUCTURE[:1])).to_parquet(path)  # kept by an older version
    assert kept_descriptors(path) is None


def test_a_moved_decoy_has_the_donors_arrangement_and_its_own_atoms_and_density():
    from pymatgen.core import Composition, Lattice, Structure

    from cosynth.experiments.synth_benchmark import moved_structure

    diamond = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    gold = moved_structure(diamond, Composition("Au"), 17.0)
    assert gold.composition.reduced_formula == "Au" and len(gold) == len(diamond)
    assert gold.volume / len(gold) == pytest.approx(17.0)
    caesium_chloride = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    salt = moved_structure(caesium_chloride, Composition("ClNa"), 22.0)  # cation to cation, anion to anion
    assert [str(site.specie) for site in salt] == ["Na", "Cl"]
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0]])
    fluorite_like = moved_structure(rutile, Composition("ZrO2"), 11.0)  # the one metal takes the one metal's places
    assert fluorite_like.composition.reduced_formula == "ZrO2"
    assert sorted({str(site.specie) for site in fluorite_like if site.frac_coords.tolist() == [0, 0, 0]}) == ["Zr"]


def test_a_baseline_that_lacks_rows_is_met_on_its_own_rows():
    from cosynth.experiments.synth_benchmark_report import beats_baselines

    def report(value, low):
        keys = ("roc_auc", "within_origin_auc", "polymorph_pair_auc")
        return {"metrics": dict.fromkeys(keys, value), "ci": dict.fromkeys(keys, [low, 1.0])}

    result = {"winner": "model", "leaky": ["leaky"], "baselines": {"origin": "", "energy": "", "leaky": ""},
              "scores": {"model": report(0.9, 0.85), "origin": report(0.8, 0.75), "energy": report(0.7, 0.6),
                         "leaky": report(0.99, 0.98)}}
    beats = beats_baselines(result)["roc_auc"]  # on all rows the energy is easy, the origin the hardest
    assert (beats["best_baseline"], beats["on_its_rows"], beats["beats_by_more_than_ci"]) == ("origin", False, True)
    result["winner_on_baseline_rows"] = {"energy": report(0.72, 0.65)}  # on the energy's rows the winner is weaker
    beats = beats_baselines(result)["roc_auc"]
    assert (beats["best_baseline"], beats["on_its_rows"], beats["winner_ci_low"]) == ("energy", True, 0.65)
    assert not beats["beats_by_more_than_ci"]


def test_balancing_effects_compare_each_candidate_with_its_balanced_twin():
    from cosynth.experiments.synth_benchmark_report import balancing_effects

    def scored(*values):
        return {"metrics": dict(zip(("roc_auc", "within_origin_auc", "polymorph_pair_auc"), values))}

    result = {"scores": {"cgcnn": scored(0.8, 0.7, 0.6), "cgcnn_balanced": scored(0.75, 0.78, 0.61),
                         "cosnet_balanced": scored(0.8, 0.8, 0.8)}}  # no unbalanced twin: no line
    assert balancing_effects(result) == ["- `cgcnn` → `cgcnn_balanced` (per-origin class balancing, test): "
                                         "roc_auc 0.800 → 0.750, within_origin_auc 0.700 → 0.780, "
                                         "polymorph_pair_auc 0.600 → 0.610."]
