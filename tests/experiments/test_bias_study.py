"""`cosynth reproduce bias-study`: the quick run end to end on the real shared data, plus the
pieces that turn numbers into the report (pairing with the paper, resumption, sentences)."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.audit import baselines
from cosynth.cli import app
from cosynth.experiments import bias_study as bs
from cosynth.experiments import bias_study_report as bs_report


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_quick_study_runs_every_stage_and_resumes_without_retraining(shared_path, tmp_path):
    shared_path("data/mp_synth_structures/mp_structures_labelled.csv.gz")
    out, work = tmp_path / "report", tmp_path / "work"
    args = ["reproduce", "bias-study", "--quick", "-o", str(out), "--work", str(work),
            "--data", str(shared_path("data"))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bias_study.json").read_text())
    assert report["quick"] and "QUICK RUN" in report["deviations"][0]
    # every experiment of the paper has our numbers beside the paper's, plus the mitigation arm
    experiments = [(r["experiment"], r["model"], r["test"]) for r in report["comparison"]]
    assert len(experiments) == len(bs.PAPER_RESULTS) + 4
    assert sum(e.startswith("mitigation") for e, _, _ in experiments) == 4
    for row in report["comparison"]:
        assert row["n"] and row["n"] > 0
        for m in ("accuracy", "recall", "specificity"):
            v = row["ours"][m]
            assert v is None or 0.0 <= v <= 1.0
    paper_own_single = next(r for r in report["comparison"] if r["model"] == "single" and r["test"] == "single test")
    assert paper_own_single["paper"]["roc_auc"] == 0.862
    assert {r["model"] for r in report["cross_evaluation"]} == set(bs.ARMS)
    assert {r["table"] for r in report["cross_evaluation"]} == set(bs.TEST_TABLES)
    assert sorted({r["volume_factor"] for r in report["compression"]}) == [0.45, 1.0]
    assert report["density_mean"]["0.45"] > report["density_mean"]["1.0"] * 2
    assert all(t["epochs_run"] == 2 for t in report["training"].values())
    assert {arm: t["lr"] for arm, t in report["training"].items()} == bs.StudyConfig().lr
    assert all(0 <= t["active_conv2"] <= 1 for t in report["training"].values())
    assert [r["E"] for r in report["ensemble_study"]["rows"]] == [1, 2, 4]
    stages = report["stage_seconds"]
    for stage in ("build datasets", "audit", "train mixed", "train single", "train mixed-volnorm",
                  "cross-evaluation", "compression", "ensemble-size study"):
        assert stages[stage]["seconds"] >= 0 and stages[stage]["runs"] == 1
    # the audit sees the planted density bias of the generated negatives
    assert report["audit_verdicts"]["mixed_source"]["packing_fraction"] == "bias"
    for page in ("index.html", "summary.html", "README.md", "cross/cross_evaluation.html",
                 "compression/volume_sweep.html", "ensemble/ensemble_study.html", "evaluate/mixed/evaluate.html",
                 "audit/mixed_source/audit.html", "figures/learning_single.png"):
        assert (out / page).stat().st_size > 500, page
    readme = (out / "README.md").read_text()
    assert "0.862" in readme and "What differs from the paper" in readme and "| mixed | 2 |" in readme

    # a second run reuses every model and cached prediction instead of recomputing them
    models = {arm: (work / "models" / arm / "model.pt").stat().st_mtime_ns for arm in bs.ARMS}
    caches = sorted((work / "predictions").glob("*.csv"))
    assert caches
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert models == {arm: (work / "models" / arm / "model.pt").stat().st_mtime_ns for arm in bs.ARMS}
    assert sorted((work / "predictions").glob("*.csv")) == caches
    again = json.loads((out / "bias_study.json").read_text())
    assert again["comparison"] == report["comparison"]
    assert again["stage_seconds"]["train mixed"]["runs"] == 2
    assert again["ensemble_study"] == report["ensemble_study"]

    # a retrained single-source model gets a fresh Table I, never the stale cached one
    study = out / "ensemble" / "ensemble_study.json"
    stale = json.loads(study.read_text())["fingerprint"]
    model = work / "models" / "single" / "model.pt"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    tables = {key: work / "data" / f"{key}.parquet" for key in bs.TEST_TABLES.values()}
    fresh = bs.ensemble_size(work / "models" / "single", bs.test_tables(tables), out, bs.StudyConfig.quick())
    assert fresh["fingerprint"] != stale
    assert json.loads(study.read_text())["fingerprint"] == fresh["fingerprint"]


def _cross(rows):
    return pd.DataFrame([{"model": m, "table": t, "n": 10, "roc_auc": a, "accuracy": 0.5, "precision": 0.5,
                          "recall": r, "specificity": s} for m, t, a, r, s in rows])


def test_comparison_pairs_each_paper_experiment_with_our_cell():
    cross = _cross([("mixed", "mixed test", 0.99, 0.97, 0.9), ("mixed", "single test", 0.55, 0.2, 0.8),
                    ("single", "single test", 0.7, 0.8, 0.5), ("single", "mixed test", 0.6, 0.7, 0.3)])
    sweep = pd.DataFrame([{"model": "mixed", "volume_factor": 0.45, "n": 10, "roc_auc": 0.5, "accuracy": 0.4,
                           "precision": 0.4, "recall": 0.05, "specificity": 0.9},
                          {"model": "single", "volume_factor": 0.45, "n": 10, "roc_auc": 0.6, "accuracy": 0.5,
                           "precision": 0.5, "recall": 0.92, "specificity": 0.2}])
    rows = bs_report.comparison_rows(cross, sweep)
    by = {(r["experiment"], r["model"]): r for r in rows}
    assert by[("own test set", "mixed")]["ours"]["roc_auc"] == 0.99
    assert by[("own test set", "mixed")]["paper"]["roc_auc"] == 0.995
    assert by[("swapped test set", "mixed")]["ours"]["specificity"] == 0.8
    assert by[("compression (volume −55 %)", "mixed")]["ours"]["recall"] == 0.05
    assert by[("compression (volume −55 %)", "single")]["ours"]["recall"] == 0.92
    # the mitigation arm was not run here: its cells are empty, not borrowed from another model
    mitigation = [r for r in rows if r["model"] == "mixed-volnorm"]
    assert len(mitigation) == 4 and all(v is None for r in mitigation for v in r["ours"].values())
    frame = bs_report.comparison_frame(rows)
    assert frame.loc[0, "roc_auc"] == "0.990 (0.995)"


def test_interpretation_reads_the_numbers():
    cross = _cross([("mixed", "mixed test", 0.991, 0.97, 0.9), ("mixed", "single test", 0.512, 0.96, 0.04),
                    ("single", "single test", 0.701, 0.8, 0.5), ("mixed-volnorm", "mixed-volnorm test", 0.6, 0.9, 0.2),
                    ("mixed-volnorm", "single test", 0.52, 0.9, 0.1)])
    sweep = pd.DataFrame([{"model": m, "volume_factor": 0.45, "roc_auc": 0.5, "recall": r, "specificity": sp}
                          for m, r, sp in (("mixed", 0.13, 0.9), ("single", 0.95, 0.2), ("mixed-volnorm", 1.0, 0.0))])
    audits = {"mixed_source": {"descriptors": {"density": {"verdict": "bias"}, "mass": {"verdict": "ok"}}}}
    text = " ".join(bs_report.interpretation(cross, sweep, audits))
    assert "0.991" in text and "0.512" in text and "from 0.96 to 0.13" in text
    assert "0.701" in text and "to 0.95" in text and "recall 1.00" in text
    assert "bias flagged on density." in text
    # recall kept by calling everything positive is named as such, for that model only
    assert "The mixed-source, volume-normalised model calls (nearly) every compressed crystal positive" in text
    assert "The single-source model calls" not in text


def test_a_run_is_finished_only_after_its_model_was_exported(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1]}).to_csv(run / "history.csv", index=False)
    (run / "checkpoints" / "last.ckpt").write_text("x")
    assert not bs._finished(run, 2, False)  # no model yet
    (run / "model.pt").write_text("m")
    os.utime(run / "model.pt", ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    assert bs._finished(run, 2, False)
    assert not bs._finished(run, 5, False)  # more epochs asked for: resume
    assert bs._finished(run, 5, True)  # stopped on its time cap: a finished run
    os.utime(run / "checkpoints" / "last.ckpt", ns=(3_000_000_000_000_000_000, 3_000_000_000_000_000_000))
    assert not bs._finished(run, 2, False)  # checkpoint newer than the model: interrupted


def test_quick_config_is_small_and_overrides_apply_to_every_arm():
    quick = bs._cli_config(True)
    assert quick.is_quick and set(quick.epochs) == set(bs.ARMS) and max(quick.epochs.values()) == 2
    full = bs._cli_config(False, epochs="7", ensemble=5)
    assert not full.is_quick and full.epochs == {arm: 7 for arm in bs.ARMS} and full.ensemble == 5
    per_arm = bs._cli_config(False, epochs="mixed=80, single=9")
    assert per_arm.epochs == {"mixed": 80, "single": 9, "mixed-volnorm": bs.StudyConfig().epochs["mixed-volnorm"]}
    for bad in ("mixd=3", "0", "mixed=x"):
        with pytest.raises(ValueError):
            bs._cli_config(False, epochs=bad)
    assert np.all(np.diff(full.ensemble_sizes) > 0) and max(full.ensemble_sizes) <= full.ensemble_pool
    assert bs._cli_config(False, lr="3e-4").lr == {arm: 3e-4 for arm in bs.ARMS}
    assert bs._cli_config(False, lr="single=5e-5").lr == {**bs.StudyConfig().lr, "single": 5e-5}
    for bad in ("-1", "single=x", "mixd=1e-3"):
        with pytest.raises(ValueError, match="--lr"):
            bs._cli_config(False, lr=bad)


def test_a_model_trained_at_another_learning_rate_is_never_reused(tmp_path):
    run = tmp_path / "single"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"lr": 1e-3}))
    bs._check_same_lr(run, 1e-3)
    with pytest.raises(ValueError, match="trained with lr 0.001, not the 0.0001"):
        bs._check_same_lr(run, 1e-4)
    bs._check_same_lr(tmp_path / "not-trained-yet", 1e-4)


def test_stage_times_add_up_across_processes(tmp_path):
    path = tmp_path / "stages.json"
    first, second = bs.Stages.load(path), bs.Stages.load(path)  # two runners started together
    first.run("cross-evaluation", lambda: None)
    second.run("cross-evaluation", lambda: None)
    second.run("compression", lambda: None)
    first.run("audit", lambda: None)
    on_disk = json.loads(path.read_text())
    assert on_disk["cross-evaluation"]["runs"] == 2
    assert on_disk["compression"]["runs"] == 1 and on_disk["audit"]["runs"] == 1


def test_label_signal_scores_reference_columns_on_test_rows_only(tmp_path):
    n = 40
    labels = [i % 2 for i in range(n)]
    frame = pd.DataFrame({
        "formula": ["NaCl"] * n, "label": labels,
        "split": ["test"] * 30 + ["train"] * 10,
        # a perfect score on test rows; train rows carry the opposite ranking and must be ignored
        "clscore_pucgcnn": [float(y) if i < 30 else 1.0 - y for i, y in enumerate(labels)],
        # lower energy above hull = synthesizable, and a third of the rows have no energy at all
        "e_above_hull": [(0.0 if y else 0.2) if i % 3 else None for i, y in enumerate(labels)],
    })
    path = tmp_path / "single.csv"
    frame.to_csv(path, index=False)
    rows = {r["score"]: r for r in baselines.label_signal(path)}
    assert set(rows) == {"clscore_pucgcnn", "e_above_hull"}  # no density column, no row
    assert rows["clscore_pucgcnn"]["roc_auc"] == 1.0 and rows["clscore_pucgcnn"]["test_rows"] == 30
    assert rows["e_above_hull"]["roc_auc"] == 1.0 and rows["e_above_hull"]["test_rows"] == 20


def test_structure_descriptor_baseline_learns_on_train_rows_and_scores_test_rows(tmp_path):
    from pymatgen.core import Lattice, Structure

    from cosynth.data.table import structure_to_cif

    rng = np.random.default_rng(0)
    rows = []
    for i in range(100):
        label = i % 2
        # rock salt whose lattice constant (hence density) gives the label away on train rows; on the
        # test rows the relation is reversed, so an AUC near 0 proves the model never saw them
        split = "test" if i >= 70 else "train"
        big = label == 1 if split == "train" else label == 0
        a = (5.9 if big else 5.3) + rng.uniform(-0.1, 0.1)
        cell = Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        rows.append({"id": f"c{i}", "formula": "NaCl", "label": label, "split": split, "cif": structure_to_cif(cell)})
    path = tmp_path / "single.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    signal = {r["score"]: r for r in baselines.label_signal(path, cache_dir=tmp_path / "descriptors")}
    baseline = signal[baselines.STRUCTURE_BASELINE]
    assert baseline["test_rows"] == 30
    assert baseline["roc_auc"] < 0.1
    assert "density" in baseline["meaning"]


def test_interpretation_puts_the_single_source_auc_beside_the_label_signal():
    cross = _cross([("mixed", "mixed test", 0.99, 1.0, 0.6), ("mixed", "single test", 0.51, 1.0, 0.0),
                    ("single", "single test", 0.612, 0.9, 0.1)])
    sweep = pd.DataFrame([{"model": "single", "volume_factor": 0.45, "roc_auc": 0.5, "recall": 0.2, "specificity": 0.8}])
    signal = [{"score": "clscore_pucgcnn", "test_rows": 220, "roc_auc": 0.744},
              {"score": "density_g_cm3", "test_rows": 266, "roc_auc": 0.51}]
    text = " ".join(bs_report.interpretation(cross, sweep, {}, signal))
    assert "clscore_pucgcnn, reaches AUC 0.744 on 220 test crystals (density_g_cm3 0.510)" in text
    assert "single-source model's 0.612" in text
    assert "labels carry" not in " ".join(bs_report.interpretation(cross, sweep, {}))
    # the single-source row: 266 test crystals, so its AUC of 0.612 has a standard error of about 0.034
    cross.loc[cross.model == "single", ["tp", "fn", "tn", "fp"]] = [126, 7, 15, 118]
    baseline = [{"score": baselines.STRUCTURE_BASELINE, "test_rows": 266, "roc_auc": 0.579}]
    text = " ".join(bs_report.interpretation(cross, sweep, {}, baseline))
    assert "descriptors, fitted on the same train split, reach AUC 0.579 on the single-source test set" in text
    assert "not above it by twice its standard error (±0.069)" in text and "not shown that it learned more" in text
    baseline[0]["roc_auc"] = 0.52
    assert "CNN does better than that" in " ".join(bs_report.interpretation(cross, sweep, {}, baseline))
    # the origin alone is a baseline to beat, not a reference score
    origin = [{"score": baselines.ORIGIN_BASELINE, "test_rows": 266, "roc_auc": 0.70}]
    text = " ".join(bs_report.interpretation(cross, sweep, {}, origin))
    assert "The origin alone" in text and "reaches AUC 0.700" in text and "labels carry" not in text


def test_origin_baseline_scores_test_rows_by_the_train_positive_rate_of_their_origin(tmp_path):
    # origin "a" is mostly positive on train, "b" mostly negative; "c" appears only on test and gets the
    # overall train rate
    rows = ([("a", 1, "train")] * 8 + [("a", 0, "train")] * 2 + [("b", 1, "train")] * 2 + [("b", 0, "train")] * 8
            + [("a", 1, "test"), ("a", 1, "test"), ("b", 0, "test"), ("b", 1, "test"), ("c", 0, "test")])
    frame = pd.DataFrame(rows, columns=["structure_source", "label", "split"])
    scores = baselines.origin_scores(frame, origin="structure_source")
    assert list(scores[-5:]) == [0.8, 0.8, 0.2, 0.2, 0.5]
    row = baselines.origin_baseline(frame)
    assert row["score"] == baselines.ORIGIN_BASELINE and row["test_rows"] == 5
    # test: positives score 0.8, 0.8, 0.2; negatives 0.2, 0.5 -> 4.5 of 6 pairs ranked right
    assert row["roc_auc"] == 0.75
    assert baselines.origin_baseline(frame.assign(structure_source="a")) is None  # one origin: no baseline
    assert baselines.origin_baseline(frame.drop(columns="structure_source")) is None
    path = tmp_path / "t.csv"
    frame.assign(formula="NaCl").to_csv(path, index=False)
    assert baselines.ORIGIN_BASELINE in {r["score"] for r in baselines.label_signal(path)}


def test_interpretation_says_when_the_single_source_model_calls_everything_positive():
    sweep = pd.DataFrame([{"model": "single", "volume_factor": 0.45, "roc_auc": 0.5, "recall": 0.75, "specificity": 0.2}])
    dead = _cross([("single", "single test", 0.504, 0.996, 0.0)])
    assert "Table I's consistency" in " ".join(bs_report.interpretation(dead, sweep, {}))
    alive = _cross([("single", "single test", 0.70, 0.8, 0.5)])
    assert "Table I's consistency" not in " ".join(bs_report.interpretation(alive, sweep, {}))
