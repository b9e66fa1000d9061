"""Grid sweeps: every combination × seed is one ``fit`` run in ``out/trials/<name>/seed<k>``.

The local runner works sequentially or on a process pool; it is resumable because ``fit`` reads
back finished runs and resumes interrupted ones. All trials end up in one table,
``out/results.csv`` (rewritten atomically after every trial), with the validation MAE used to
choose a combination and the test metrics reported beside it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, fields, replace
from pathlib import Path

import pandas as pd

from cosynth.training.bimodal import FitConfig, fit

# The COSNet paper's grid (spec: weight decay × lr × lr decay × concatenation × scalar weight).
PAPER_GRID = {
    "weight_decay": [1e-1, 1e-2, 5e-3, 1e-3, 5e-4, 1e-4],
    "lr": [1e-2, 5e-3, 1e-3, 5e-4, 1e-4],
    "lr_decay": [0.99, 0.98, 0.97, 0.96, 0.95, 0.94],
    "concat": [False, True],
    "scalar_weight": [False, True],
}


def load_grid(path) -> dict[str, list]:
    """A grid from a JSON file ({"param": [values...]}); ``"paper"`` gives the paper's grid."""
    if str(path) == "paper":
        return dict(PAPER_GRID)
    grid = json.loads(Path(path).read_text())
    valid = {f.name for f in fields(FitConfig)}
    unknown = set(grid) - valid
    if unknown:
        raise ValueError(f"unknown parameter(s) in {path}: {', '.join(sorted(unknown))}")
    return grid


def expand(grid: dict[str, list]) -> list[dict]:
    """Every combination, in a fixed order (keys sorted, values as given)."""
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def trial_name(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    short = "_".join(f"{k}={v}" for k, v in sorted(params.items()))
    return (short if len(short) <= 80 else "") + ("-" if len(short) <= 80 else "") + hashlib.sha1(text.encode()).hexdigest()[:8]


def _run_one(splits, out: str, base: dict, params: dict, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    config = replace(FitConfig(**base), **params, seed=seed)
    metrics = fit(splits, Path(out) / "trials" / trial_name(params) / f"seed{seed}", config)
    return {"trial": trial_name(params), "seed": seed, **params, **metrics}


def _write(rows: list[dict], out: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows).sort_values(["trial", "seed"]).reset_index(drop=True)
    tmp = out / "results.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "results.csv")
    return df


def run_sweep(splits: dict[str, pd.DataFrame], grid: dict[str, list], out, *, base: FitConfig | None = None,
              seeds=(0,), workers: int = 1, backend: str = "local") -> pd.DataFrame:
    """Run every combination of ``grid`` (× seeds) and return the results table.

    Writes ``out/grid.json`` and ``out/results.csv`` (rewritten after each finished trial in the local backend).

    Args:
        splits: split name → frame, passed to every trial.
        grid: parameter name → values; every combination is a trial.
        out: the sweep folder, created if missing.
        base: the fit settings the combinations start from (default :class:`FitConfig`).
        seeds: seeds to run for each combination.
        workers: processes of the local backend (1 = sequential); not used by Ray.
        backend: ``"local"``, or ``"ray"`` to hand the same trials to Ray Tune (``cosynth.sweeps.ray_tune``)
            for users with a cluster.

    Returns:
        One row per (trial, seed), sorted by trial and seed.

    Raises:
        ValueError: an unknown backend.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = base or FitConfig()
    combos = expand(grid)
    (out / "grid.json").write_text(json.dumps({"grid": grid, "base": asdict(base), "seeds": list(seeds)}, indent=2,
                                              default=str))
    if backend == "ray":
        from cosynth.sweeps.ray_tune import run_ray

        return _write(run_ray(splits, combos, out, base=base, seeds=seeds), out)
    if backend != "local":
        raise ValueError(f"backend must be local or ray, not {backend!r}")
    jobs = [(p, s) for p in combos for s in seeds]
    rows: list[dict] = []
    if workers <= 1:
        for params, seed in jobs:
            rows.append(_run_one(splits, str(out), asdict(base), params, seed))
            _write(rows, out)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_one, splits, str(out), asdict(base), p, s) for p, s in jobs]
            for fut in as_completed(futures):
                rows.append(fut.result())
                _write(rows, out)
    return _write(rows, out)


def best_trial(results: pd.DataFrame, metric: str = "val_mae_all") -> pd.Series:
    """Mean over seeds per trial; the row with the lowest validation metric."""
    num = results.select_dtypes("number").columns.difference(["seed"])
    agg = results.groupby("trial")[list(num)].mean()
    return agg.sort_values(metric).iloc[0]
