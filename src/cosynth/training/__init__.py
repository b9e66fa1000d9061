"""Lightning training loops: the voxel CNN (:mod:`.voxel`) and COSNet and its encoders (:mod:`.cosnet`)."""

from __future__ import annotations

from pathlib import Path


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
