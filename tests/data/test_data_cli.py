"""`cosynth data …` end to end through typer's CliRunner."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.cli import app
from cosynth.data.table import CrystalTable, read_table

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(shared_path):
    return shared_path("data/mp_synth_structures").parent


def test_load_shared_dataset_to_file(data_root, tmp_path):
    out = tmp_path / "xiespp.parquet"
    result = runner.invoke(app, ["data", "load", "hypothetical_structures", "--subset", "xiespp",
                                 "--root", str(data_root), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_table(out)) == 13 and "13 rows (13 with structure), 0 refused" in result.output


def test_unknown_dataset_exits_2(data_root):
    result = runner.invoke(app, ["data", "load", "no_such_thing", "--root", str(data_root)])
    assert result.exit_code == 2 and "error:" in result.output


@pytest.fixture
def pool_file(tmp_path, ab_pool):
    table = CrystalTable.from_structures([s for _, s in ab_pool], ids=[i for i, _ in ab_pool],
                                         label=[1] * len(ab_pool))
    path = tmp_path / "pool.parquet"
    table.write(path)
    return path


def test_generate_negatives_split_and_leakage(tmp_path, pool_file):
    out = tmp_path / "gen.parquet"
    result = runner.invoke(app, ["data", "generate-negatives", "--formula", "SiC,GaAs", "--pool", str(pool_file),
                                 "--min-distance-factor", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    gen = read_table(out).frame
    assert set(gen["formula"]) == {"SiC", "GaAs"} and (gen["label"] == 0).all()
    assert (tmp_path / "gen.errors.csv").exists()  # duplicates are listed with their reason

    # positives + generated, split by formula groups, then checked for leakage
    both = pd.concat([read_table(pool_file).frame, gen], ignore_index=True)
    CrystalTable.from_frame(both).write(tmp_path / "both.parquet")
    split_out = tmp_path / "split.parquet"
    result = runner.invoke(app, ["data", "split", str(tmp_path / "both.parquet"), "-o", str(split_out),
                                 "--group-by", "formula", "--seed", "1"])
    assert result.exit_code == 0, result.output
    frame = read_table(split_out).frame
    assert frame.groupby("formula")["split"].nunique().max() == 1
    result = runner.invoke(app, ["data", "check-leakage", str(split_out), "--strict", "-o", str(tmp_path / "pairs.csv")])
    summary = json.loads(result.stdout)
    # the prototypes are AB structure types of other formulas: nothing leaks across formula groups
    assert result.exit_code == 0 and summary["pairs_identical"] == 0 and summary["pairs_near_identical"] == 0


def test_bad_split_option_exits_2(tmp_path, pool_file):
    result = runner.invoke(app, ["data", "split", str(pool_file), "-o", str(tmp_path / "x.parquet"), "--split", "60/40"])
    assert result.exit_code == 2 and "--split must look like 60/20/20" in result.output


@pytest.mark.slow
def test_build_single_source_writes_table_and_card(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COSYNTH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ss.parquet"
    result = runner.invoke(app, ["data", "build", "single-source", "--root", str(data_root), "-o", str(out),
                                 "--formula", "ZnS,TiO2,SiC", "--group-by-formula"])
    assert result.exit_code == 0, result.output
    frame = read_table(out).frame
    assert set(frame["formula"]) == {"ZnS", "TiO2", "SiC"} and frame.groupby("formula")["split"].nunique().max() == 1
    assert (tmp_path / "ss.card.md").exists() and json.loads((tmp_path / "ss.card.json").read_text())["split"]["group_by_formula"]
