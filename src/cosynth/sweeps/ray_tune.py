"""Ray Tune backend for grid sweeps (optional extra ``cosynth[ray]``): the same trials, on a cluster.

Each Ray trial calls ``cosynth.training.bimodal.fit`` for one combination and seed and reports its
metrics; run directories are the same as the local runner's, so a sweep can move between
backends and still reuse finished runs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from cosynth.training.bimodal import FitConfig


def run_ray(splits: dict[str, pd.DataFrame], combos: list[dict], out, *, base: FitConfig, seeds=(0,),
            cpus_per_trial: float = 1.0) -> list[dict]:
    """Run ``combos`` × ``seeds`` as a Ray Tune grid.

    Args:
        splits: split name → frame, passed to every trial (through Ray's object store when Ray is
            already initialised).
        combos: parameter combinations, each overriding fields of ``base``.
        out: the sweep folder; runs go to ``out/trials`` as with the local runner, Ray's own files to ``out/ray``.
        base: the fit settings the combinations start from.
        seeds: seeds to run for each combination.
        cpus_per_trial: CPUs Ray reserves for each trial.

    Returns:
        One metrics dict per trial (Ray's bookkeeping fields removed).

    Raises:
        ImportError: Ray is not installed.
        RuntimeError: a trial failed.
    """
    try:
        import ray
        from ray import tune
    except ImportError as err:  # pragma: no cover - exercised only without ray
        raise ImportError("the Ray backend needs the optional extra: pip install 'cosynth[ray]'") from err

    from cosynth.sweeps.runner import _run_one

    out = Path(out).resolve()
    base_dict = asdict(base)
    splits_ref = ray.put(splits) if ray.is_initialized() else None

    def trainable(cfg):
        data = ray.get(splits_ref) if splits_ref is not None else splits
        return _run_one(data, str(out), base_dict, cfg["params"], cfg["seed"])

    space = {"params": tune.grid_search(combos), "seed": tune.grid_search(list(seeds))}
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": cpus_per_trial}), param_space=space,
                       run_config=tune.RunConfig(storage_path=str(out / "ray"), name="sweep", verbose=0))
    results = tuner.fit()
    rows = []
    for r in results:
        if r.error is not None:
            raise RuntimeError(f"Ray trial failed: {r.error}")
        rows.append({k: v for k, v in r.metrics.items() if not k.startswith(("time_", "timestamp", "pid", "hostname",
                                                                              "node_ip", "date", "training_iteration",
                                                                              "done", "trial_id", "config",
                                                                              "iterations_since_restore",
                                                                              "checkpoint_dir_name", "should_checkpoint"))})
    return rows


__all__ = ["run_ray"]
