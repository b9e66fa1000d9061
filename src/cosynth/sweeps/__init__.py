"""Hyper-parameter sweeps over ``cosynth.training.bimodal.fit``: a local runner and a Ray Tune backend."""

from cosynth.sweeps.runner import PAPER_GRID, expand, load_grid, run_sweep

__all__ = ["PAPER_GRID", "expand", "load_grid", "run_sweep"]
