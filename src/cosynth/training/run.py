"""What every trainer shares: the run directory, epoch-keyed shuffling and the per-epoch history.

A run directory holds ``config.json``, ``history.csv``, ``checkpoints/{best,last}.ckpt``,
``model.pt`` and ``metrics.json``. It knows when it is finished (``metrics.json`` written under
the same config) and when it may resume: only the settings that do not change what an epoch
computes (epochs, time limit, threads) may differ; any other change starts afresh, because the
old checkpoints would mislead. The number of processes is loose too: a run on several
processes (:mod:`.parallel`) computes the same epochs as one, and only rank 0 writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Sampler

from cosynth.io.files import atomic_write_json, write_table

LOOSE_SETTINGS = ("epochs", "max_minutes", "threads", "devices", "strategy")


class EpochShuffle(Sampler):
    """A permutation that depends only on (seed, epoch, salt), so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int, salt: int):
        self.n, self.seed, self.salt, self.epoch = n, seed, salt, 0

    def __iter__(self):
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, self.salt]))
        return iter(rng.permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class RunDirectory:
    """A training run's folder, its config and its state.

    Args:
        path: the folder (created on :meth:`start`).
        config: the run's settings as plain JSON values.
        defaults: settings a saved config may lack (fields added later take these values).
        loose: settings that may change between a run and its resumption.
    """

    def __init__(self, path, config: dict, *, defaults: dict | None = None, loose: Iterable[str] = LOOSE_SETTINGS):
        self.path = Path(path)
        self.config = json.loads(json.dumps(config, default=str))
        self.defaults = json.loads(json.dumps(defaults or {}, default=str))
        self.loose = tuple(loose)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def saved_config(self) -> dict | None:
        path = self.path / "config.json"
        return {**self.defaults, **json.loads(path.read_text())} if path.exists() else None

    def finished(self) -> bool:
        """``metrics.json`` says finished and was written under exactly this config."""
        return (self.metrics_path.exists() and self.read_metrics().get("finished", True)
                and self.saved_config() == {**self.defaults, **self.config})

    def resumable(self) -> bool:
        """No saved config, or one that differs from this config in loose settings only."""
        saved = self.saved_config()
        return saved is None or all(saved.get(k) == v for k, v in self.config.items() if k not in self.loose)

    def start(self, resume: bool = True, write: bool = True) -> str | None:
        """Prepare the folder; returns the checkpoint to resume from, or None to start afresh.

        ``write=False`` (the extra processes of a multi-process run) only works out the answer
        the writing process gets, so nothing races with it.
        """
        fresh = not resume or not self.resumable()
        if write:
            # metrics.json goes in any case: under the config written next, an old one would tell the
            # other processes (which start later and check finished()) that this run is already done
            self.metrics_path.unlink(missing_ok=True)
            if fresh:
                for stale in (self.last_checkpoint, self.best_checkpoint, self.history_path):
                    stale.unlink(missing_ok=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path / "config.json", self.config)
        return None if fresh or not self.last_checkpoint.exists() else str(self.last_checkpoint)

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.history_path) if self.history_path.exists() else pd.DataFrame()

    def read_metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text())

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics_path, metrics)


def quiet_lightning() -> None:
    """Silence Lightning's banners, tips and warnings that say nothing about the user's run.

    Kept: real problems (a collapse warning, errors). Dropped: "GPU available", the model summary
    tips, "checkpoint directory exists" (expected when a run resumes) and the data-loader worker hint
    (cosynth's batches are built in the main process on purpose, for determinism).
    """
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (r".*Checkpoint directory .* exists and is not empty.*", r".*does not have many workers.*",
                    r".*litlogger.*", r".*LeafSpec.*", r".*sync_dist=True.*", r".*The number of training batches .* is smaller.*"):
        warnings.filterwarnings("ignore", message=pattern)


def epoch_history(history: Path, epoch_aware: list, on_row: Callable[[dict], None] | None = None):
    """A Lightning callback that tells ``epoch_aware`` objects the epoch and writes ``history``.

    Each finished epoch adds a row: the epoch, every logged ``train_*``, ``val_*`` and
    ``active_*`` value, the learning rate and the epoch's seconds. A resumed run first drops the
    rows of epochs it will redo. ``on_row`` sees each row (for warnings and progress lines).
    In a multi-process run every process tracks the epoch; only rank 0 writes and calls ``on_row``.
    """
    import lightning as L

    class EpochHistory(L.Callback):
        def __init__(self):
            self.t0 = time.perf_counter()

        def on_train_epoch_start(self, trainer, module):
            for obj in epoch_aware:
                obj.epoch = trainer.current_epoch
            self.t0 = time.perf_counter()
            if trainer.is_global_zero and history.exists():
                hist = pd.read_csv(history)
                write_table(hist[hist.epoch < trainer.current_epoch], history)

        def on_train_epoch_end(self, trainer, module):
            if not trainer.is_global_zero:
                return
            metrics = trainer.callback_metrics
            row = {"epoch": trainer.current_epoch,
                   **{k: float(v) for k, v in metrics.items() if k.startswith(("train_", "val_", "active_"))},
                   "lr": trainer.optimizers[0].param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - self.t0, 2)}
            hist = pd.read_csv(history) if history.exists() else pd.DataFrame()
            hist = hist[hist.epoch != row["epoch"]] if len(hist) else hist
            write_table(pd.concat([hist, pd.DataFrame([row])], ignore_index=True), history)
            if on_row is not None:
                on_row(row)

    return EpochHistory()


def run_checkpoints(run_dir: Path, monitor: str) -> list:
    """``best.ckpt`` (lowest ``monitor``) and ``last.ckpt`` (the latest finished epoch).

    ``last`` needs a callback of its own: Lightning's ``save_last`` on the monitored callback only
    writes when the monitored value improves, so a run killed on a plateau would redo every epoch
    since its best one. Both survive a moved or copied run folder (see :func:`_movable`).
    """
    import lightning as L

    Checkpoint = _movable(L.pytorch.callbacks.ModelCheckpoint)
    best = Checkpoint(dirpath=Path(run_dir) / "checkpoints", filename="best", monitor=monitor, mode="min",
                      save_top_k=1, enable_version_counter=False)
    latest = Checkpoint(dirpath=Path(run_dir) / "checkpoints", filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False)
    return [best, latest]


def _movable(base):
    """``base`` (Lightning's ModelCheckpoint) that keeps its best score when the run folder has moved.

    Lightning restores the best score only when the checkpoint folder is the one it was saved from;
    after a move or copy it forgets it, and the first epoch of the resumed run overwrites ``best.ckpt``
    however bad it is. Here the saved paths are rebased onto the current folder instead.
    """

    class MovableCheckpoint(base):
        def load_state_dict(self, state_dict: dict) -> None:
            old = state_dict.get("dirpath")
            if old and self.dirpath and old != self.dirpath:
                def rebase(path):
                    return str(Path(self.dirpath) / Path(path).name) if path else path

                state_dict = {**state_dict, "dirpath": self.dirpath,
                              "best_model_path": rebase(state_dict.get("best_model_path")),
                              "kth_best_model_path": rebase(state_dict.get("kth_best_model_path")),
                              "last_model_path": rebase(state_dict.get("last_model_path")),
                              "best_k_models": {rebase(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
            super().load_state_dict(state_dict)

    return MovableCheckpoint
