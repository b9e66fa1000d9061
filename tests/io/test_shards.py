"""`predict --shard i/N`: a deterministic partition by crystal id whose union is one unsharded run."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.cli import app
from cosynth.io import iter_crystals
from cosynth.io.shards import parse_shard, shard_of

DATA = Path(__file__).resolve().parents[1] / "io" / "data"
INPUTS = [str(DATA / "good"), str(DATA / "bad"), str(DATA / "tables" / "crystals.csv"), str(DATA / "missing.cif")]


def test_shard_of_is_a_fixed_function_of_the_id():
    assert [shard_of(k, 7) for k in ("NaCl", "mp-149", "sub/two_blocks")] == \
        [shard_of(k, 7) for k in ("NaCl", "mp-149", "sub/two_blocks")]
    counts = pd.Series([shard_of(f"mp-{i}", 4) for i in range(4000)]).value_counts()
    assert set(counts.index) == {0, 1, 2, 3} and counts.min() > 900  # close to uniform
    assert shard_of("anything", 1) == 0


@pytest.mark.parametrize("text, message", [("3", "i/N"), ("a/b", "i/N"), ("4/4", "within"), ("0/0", "at least")])
def test_bad_shard_text_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_shard(text)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_shards_partition_the_records_and_keep_input_order(n):
    whole = [(r.id, r.status, r.error) for r in iter_crystals(INPUTS)]
    parts = [[(r.id, r.status, r.error) for r in iter_crystals(INPUTS, shard=(i, n))] for i in range(n)]
    assert sorted(x for p in parts for x in p) == sorted(whole)
    for part in parts:  # each shard is the unsharded run's order, filtered
        assert part == [x for x in whole if x in part]
    # every crystal of a multi-structure file goes with the file
    homes = {x[0]: i for i, p in enumerate(parts) for x in p}
    assert homes["two_blocks#0"] == homes["two_blocks#1"]


def test_predict_shards_union_equals_one_run(tmp_path):
    runner = CliRunner()
    args = [str(DATA / "good"), str(DATA / "tables" / "crystals.csv"), "--formula", "SiO2,TiO2,Fe2O3,NaNO3"]
    whole = tmp_path / "whole.csv"
    assert runner.invoke(app, ["predict", *args, "-o", str(whole)]).exit_code == 0
    parts = []
    for i in range(3):
        out = tmp_path / f"part{i}.csv"
        result = runner.invoke(app, ["predict", *args, "--shard", f"{i}/3", "-o", str(out)])
        assert result.exit_code == 0, result.output
        parts.append(pd.read_csv(out, keep_default_na=False, na_values=[""], dtype={"id": str}))
    union = pd.concat(parts).sort_values("id").reset_index(drop=True)
    expected = pd.read_csv(whole, keep_default_na=False, na_values=[""], dtype={"id": str})
    pd.testing.assert_frame_equal(union, expected.sort_values("id").reset_index(drop=True), check_dtype=False,
                                  check_exact=True)
    bad = runner.invoke(app, ["predict", *args, "--shard", "3/3"])
    assert bad.exit_code == 2 and "within 0" in bad.output
