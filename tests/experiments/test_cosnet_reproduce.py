"""`cosynth reproduce cosnet --quick` end to end on the real shared data (small subsets, 2 epochs)."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.cli import app


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_quick_reproduction_writes_report_json_and_figures(shared_path, tmp_path, monkeypatch):
    shared_path("data/cosnet_splits/li_conductivity/Conductivity-database.csv")
    shared_path("data/mp_synth_structures/mp_structures_labelled.csv.gz")
    monkeypatch.setenv("COSYNTH_CACHE", str(tmp_path / "cache"))
    out, runs = tmp_path / "report", tmp_path / "runs"
    result = CliRunner().invoke(app, ["reproduce", "cosnet", "--dataset", "li_conductivity", "--quick",
                                      "-o", str(out), "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    modes = {r["mode"] for r in report["table1"]}
    assert modes == {"composition", "bimodal_aug", "bimodal"}
    assert {r["subset"] for r in report["table1"]} >= {"all", "without_structure", "with_structure"}
    assert len(report["runs"]) == 6  # 3 modes × 2 seeds
    assert all(r["finished"] for r in report["runs"])
    assert {r["fraction"] for r in report["fraction_study"]} == {0.0, 1.0}
    assert report["composition_weight"]["without_structure"]["mean"] == pytest.approx(1.0)
    for fig in report["figures"].values():
        assert (out / fig).stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "QUICK MODE" in md and "paper" in md and "1499" in md
    # augmentation ran on the training split only: val/test predictions hold no augmented rows
    aug = [r for r in report["runs"] if r["mode"] == "bimodal_aug"][0]
    assert aug["n_train_augmented"] > 0
    # a second invocation reuses the finished runs instead of training again
    again = CliRunner().invoke(app, ["reproduce", "cosnet", "--dataset", "li_conductivity", "--quick",
                                     "-o", str(out), "--runs", str(runs), "--no-fraction-study"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text())["runs"] == report["runs"]
    # --no-train reports what finished and names what did not (seed 2 was never trained)
    partial = CliRunner().invoke(app, ["reproduce", "cosnet", "--dataset", "li_conductivity", "--quick", "--seeds", "3",
                                       "-o", str(out), "--runs", str(runs), "--no-fraction-study", "--no-train"])
    assert partial.exit_code == 0, partial.output
    again = json.loads((out / "report.json").read_text())
    assert again["runs"] == report["runs"]
    assert sorted((u["mode"], u["seed"]) for u in again["unfinished_runs"]) == [
        ("bimodal", 2), ("bimodal_aug", 2), ("composition", 2)]
    assert "Not finished when this report was written" in (out / "report.md").read_text()


def test_unknown_dataset_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "cosnet", "--dataset", "nope", "--quick", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "error:" in result.output and "nope" in result.output


def test_paper_splits_row_counts_and_structure_join(shared_path):
    from cosynth.data.cosnet_splits import load_cosnet_split

    root = shared_path("data/cosnet_splits").parent
    bg = load_cosnet_split(root, "band_gap")
    assert {k: len(v) for k, v in bg.items()} == {"train": 3545, "val": 1167, "test": 1188}
    status = {k: v["structure_status"].value_counts().to_dict() for k, v in bg.items()}
    # 1,915 referenced; 519 in mp_synth_structures, 167 more from mp_extra_structures/cosnet_extra_structures
    assert status["train"] == {"none": 1630, "missing": 1229, "ok": 686}
    ok = bg["train"][bg["train"]["structure_status"] == "ok"]
    assert ok["cif"].str.startswith("# generated using pymatgen").all() or ok["cif"].str.contains("_cell_length_a").all()
    assert set(bg["train"].columns) >= {"id", "formula", "cif", "target"}
    li = load_cosnet_split(root, "li_conductivity")
    assert sum(len(v) for v in li.values()) == 1676
    assert sum(int((v["structure_status"] == "ok").sum()) for v in li.values()) == 435
    norm = {k: set(v["formula"].str.replace(r"\s+", "", regex=True)) for k, v in li.items()}
    assert not (norm["train"] & norm["val"]) and not (norm["train"] & norm["test"]) and not (norm["val"] & norm["test"])
    assert load_cosnet_split(root, "li_conductivity")["test"]["id"].tolist() == li["test"]["id"].tolist()


@pytest.mark.parametrize(("dataset", "covered", "referenced"),
                         [("band_gap", 1043, 2649), ("refractive_index", 316, 685), ("rdielectric_constant", 247, 583)])
def test_structure_coverage_counts_distinct_mp_ids(shared_path, dataset, covered, referenced):
    """mp_extra_structures/SOURCE.md: distinct MP ids with a CIF, after adding cosnet_extra_structures."""
    from cosynth.data.cosnet_splits import COSNET_EXTRA_TABLE, load_cosnet_split, mp_id_coverage
    from cosynth.io.files import read_table

    root = shared_path("data/" + COSNET_EXTRA_TABLE).parents[1]
    splits = load_cosnet_split(root, dataset)
    assert mp_id_coverage(splits) == {"referenced": referenced, "with_cif": covered}
    # every split row the extra table names now carries that table's CIF
    extra = read_table(root / COSNET_EXTRA_TABLE)
    extra = extra[extra["dataset"] == dataset]
    by_id = {name: df.set_index("id") for name, df in splits.items()}
    for row in extra.head(40).itertuples():
        got = by_id[row.split].loc[f"{dataset}-{row.row_index}"]
        assert got["structure_status"] == "ok" and got["cif"] == row.cif


def test_mp_learning_curve_report(shared_path, tmp_path, monkeypatch):
    """`cosynth reproduce cosnet-mp` on a tiny pooled sample: nested training sets, report + figures."""
    shared_path("data/mp_extra_structures/mp_structures_extra.csv.gz")
    monkeypatch.setenv("COSYNTH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["reproduce", "cosnet-mp", "--sizes", "20,all", "--models", "cgcnn",
                                      "--epochs", "1", "--fractions", "0,1", "--max-rows", "60",
                                      "-o", str(out), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == {"train": 48, "val": 6, "test": 6}
    curve = pd.DataFrame(report["learning_curve"])
    assert sorted(curve["n_train"].unique()) == [20, 48] and set(curve["model"]) == {"cgcnn"}
    assert curve["test_n"].eq(6).all()
    assert report["power_law_fit"]["paper_mae"] == 0.039
    assert {r["fraction"] for r in report["fraction_study"]} == {0.0, 1.0}
    for fig in report["figures"].values():
        assert (out / fig).stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "CGCNN paper" in text
    # the fraction study is read beside the single-modality model on the same training rows
    assert "From no structures to all of them the test MAE changes by" in text
    assert "structure only (de-CGCNN)" in text and "48 training rows" in text


def test_paired_deltas_compare_the_same_seed():
    from cosynth.experiments.cosnet import paired_deltas

    runs = pd.DataFrame({"mode": ["composition"] * 2 + ["bimodal_aug"] * 2, "seed": [0, 1, 0, 1],
                         "test_mae_all": [0.5, 0.6, 0.45, 0.62], "test_n_all": 10,
                         "test_mae_with_structure_available": [0.4, 0.4, 0.5, 0.3],
                         "test_n_with_structure_available": 3})
    d = paired_deltas(runs).set_index("subset")
    assert d.loc["all", "delta_mean"] == pytest.approx((-0.05 + 0.02) / 2)
    assert d.loc["all", "wins"] == 1 and d.loc["with_structure_available", "n"] == 3
    assert set(d.index) == {"all", "with_structure_available"}
