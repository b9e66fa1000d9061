"""Where cosynth finds its data and keeps its caches: one place, environment overrides first.

* ``COSYNTH_DATA``: the shared data root (the folder holding ``mp_synth_structures``,
  ``cosnet_splits`` …). Without it, ``../shared/data`` beside a source checkout is used, then
  ``./shared/data`` and ``../shared/data`` from the working folder (an installed wheel lives in
  site-packages, where no data is).
* ``COSYNTH_CACHE``: the cache root (graphs, descriptors); else ``$XDG_CACHE_HOME/cosynth`` or
  ``~/.cache/cosynth``, never the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "DataRootError", "cache_dir", "data_root", "mp_structures_table"]

MP_TABLE = "mp_synth_structures/mp_structures_labelled.csv.gz"
DEFAULT_MODEL = "cosynth-synth"  # the bundled model `cosynth predict` and `predict()` use by default


class DataRootError(FileNotFoundError):
    """The shared data could not be found; the message names every place looked at."""


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    checkout = here.parents[2]  # src/cosynth/config.py -> the repository root of a source checkout
    found = [checkout.parent / "shared" / "data"] if (checkout / "pyproject.toml").is_file() else []
    cwd = Path.cwd()
    return found + [cwd / "shared" / "data", cwd.parent / "shared" / "data"]


def data_root(root=None, *, must_exist: bool = True) -> Path:
    """The shared data root.

    Args:
        root: an explicit folder (e.g. a ``--data`` option); wins over everything else.
        must_exist: raise :class:`DataRootError` when the folder is missing.

    Returns:
        The folder, from ``root``, else ``$COSYNTH_DATA``, else the first existing default.
    """
    if root is not None:
        chosen, looked = Path(root), [Path(root)]
    elif os.environ.get("COSYNTH_DATA"):
        chosen = Path(os.environ["COSYNTH_DATA"])
        looked = [chosen]
    else:
        looked = _candidates()
        chosen = next((p for p in looked if p.is_dir()), looked[0])
    if must_exist and not chosen.is_dir():
        where = ", ".join(str(p) for p in looked)
        raise DataRootError(f"no shared data folder found (looked in {where}); pass --data PATH or set COSYNTH_DATA")
    return chosen


def cache_dir(kind: str) -> Path:
    """``<cache root>/<kind>`` (e.g. ``graphs``, ``descriptors``); created by whoever writes it."""
    root = os.environ.get("COSYNTH_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cosynth"
    return Path(root) / kind


def mp_structures_table(root=None) -> Path:
    """The labelled Materials Project structures table of the shared data."""
    return data_root(root) / MP_TABLE
