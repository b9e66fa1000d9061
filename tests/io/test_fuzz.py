"""Fuzz: 1,000+ mutated real CIFs, POSCARs and table rows through reading, validation and voxel tiling.

Each run is a subprocess under a 3 GB address-space limit (RLIMIT_AS), so an input that tried to
allocate more would show up as an error row mentioning memory (or a crash), not as a CI machine
swapping. Asserted: exactly one record per input, no exception escapes the readers or the imager
of a valid crystal, bounded peak RSS, and at most 5 % of error messages are bare Python exceptions
(:func:`cosynth.io.errors.is_bare`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cosynth

SHARED = Path(os.environ.get("COSYNTH_SHARED", "/work/shared")) / "data" / "mp_synth_structures"
LIMIT_GB = 3
SRC = Path(cosynth.__file__).resolve().parents[1]


def run_fuzz(n: int, seed: int, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "cosynth.io.fuzz", "--n", str(n), "--seed", str(seed), "--limit-gb", str(LIMIT_GB),
           *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]  # library noise reaches no user
    return json.loads(done.stdout)


def check(summary: dict, n: int) -> None:
    assert summary["n_problems"] == 0, summary["problems"]
    assert summary["records"] == n  # exactly one record per input (problems lists any other count)
    assert summary["errors"] > n // 4 and summary["ok"] > n // 20  # the mutations bite, but not all
    assert summary["bare_share"] <= 0.05, summary["bare_examples"]
    assert not any("memory" in m for m, _ in summary["top_messages"]), summary["top_messages"]
    assert summary["rss_peak_mb"] - summary["rss_start_mb"] < 1024
    assert summary["slowest"]["seconds"] < 30, summary["slowest"]


def test_fuzz_repo_and_ase_cifs():
    summary = run_fuzz(1000, 0)
    check(summary, 1000)


def test_fuzz_materials_project_cifs():
    table = SHARED / "mp_structures_labelled.csv.gz"
    if not table.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared MP structures are missing: {table} (set COSYNTH_SHARED)")
        pytest.skip(f"shared data not present ({table}); the repo/ASE fuzz test still runs")
    summary = run_fuzz(600, 1, "--shared", str(table))
    check(summary, 600)


def test_mutations_are_seeded_and_keep_one_data_block():
    from cosynth.io.fuzz import make_inputs

    a, b = make_inputs(60, seed=3), make_inputs(60, seed=3)
    assert [(x.name, x.text) for x in a] == [(x.name, x.text) for x in b]
    assert {m for x in a for m in x.mutations} >= {"extreme", "number", "truncate"}
    for item in a:
        if item.kind != "poscar":
            assert sum(line.lstrip().lower().startswith("data_") for line in item.text.split("\n")) <= 1
