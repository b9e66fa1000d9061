"""Grid sweeps on a tiny in-memory table: local runner (sequential, process pool, resume), Ray Tune."""

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Element, Lattice, Structure

from cosynth.sweeps.runner import PAPER_GRID, best_trial, expand, load_grid, run_sweep
from cosynth.training.bimodal import FitConfig

PAIRS = [(a, b) for a in ("Li", "Na", "K", "Rb") for b in ("F", "Cl", "Br", "I")]


@pytest.fixture(scope="module")
def splits():
    rows = []
    for i, (a, b) in enumerate(PAIRS):
        lat = 2 * (Element(a).atomic_radius + Element(b).atomic_radius)
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        rows.append({"id": f"{a}{b}", "formula": f"{a}{b}", "cif": s.to(fmt="cif") if i % 3 == 0 else None,
                     "target": float(lat), "structure_status": "ok" if i % 3 == 0 else "none"})
    df = pd.DataFrame(rows)
    return {"train": df.iloc[:10].reset_index(drop=True), "val": df.iloc[10:13].reset_index(drop=True),
            "test": df.iloc[13:].reset_index(drop=True)}


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("COSYNTH_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


BASE = FitConfig(epochs=1, batch_size=4, threads=1)
TINY = {"weight_decay": [1e-1, 1e-4], "concat": [False, True]}


def test_paper_grid_size_and_order():
    combos = expand(PAPER_GRID)
    assert len(combos) == 6 * 5 * 6 * 2 * 2
    assert combos == expand(PAPER_GRID)  # fixed order
    assert len({json.dumps(c, sort_keys=True) for c in combos}) == len(combos)


def test_grid_file_is_validated(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"lr": [1e-3], "not_a_param": [1]}))
    with pytest.raises(ValueError, match="not_a_param"):
        load_grid(tmp_path / "g.json")
    assert load_grid("paper") == PAPER_GRID


def test_local_sweep_one_table_and_resume(splits, tmp_path):
    df = run_sweep(splits, TINY, tmp_path / "sweep", base=BASE, seeds=(0,))
    assert len(df) == 4 and df["finished"].all()
    on_disk = pd.read_csv(tmp_path / "sweep/results.csv")
    assert len(on_disk) == 4 and {"weight_decay", "concat", "val_mae_all", "test_mae_all"} <= set(on_disk.columns)
    stamps = sorted(p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("metrics.json"))
    again = run_sweep(splits, TINY, tmp_path / "sweep", base=BASE, seeds=(0,))
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("metrics.json")) == stamps
    pd.testing.assert_frame_equal(df, again)
    assert best_trial(df)["val_mae_all"] == df["val_mae_all"].min()


def test_process_pool_gives_the_same_results(splits, tmp_path):
    grid = {"weight_decay": [1e-1, 1e-4]}
    seq = run_sweep(splits, grid, tmp_path / "seq", base=BASE)
    pool = run_sweep(splits, grid, tmp_path / "pool", base=BASE, workers=2)
    np.testing.assert_allclose(seq["test_mae_all"], pool["test_mae_all"], rtol=1e-6)


def test_ray_tune_backend_on_a_tiny_grid(splits, tmp_path):
    pytest.importorskip("ray", reason="Ray Tune is an optional extra (pip install 'cosynth[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        grid = {"weight_decay": [1e-1, 1e-4]}
        df = run_sweep(splits, grid, tmp_path / "ray", base=BASE, backend="ray")
        local = run_sweep(splits, grid, tmp_path / "local", base=BASE)
    finally:
        ray.shutdown()
    assert len(df) == 2 and set(df["weight_decay"]) == {1e-1, 1e-4}
    np.testing.assert_allclose(df.sort_values("weight_decay")["test_mae_all"],
                               local.sort_values("weight_decay")["test_mae_all"], rtol=1e-6)
