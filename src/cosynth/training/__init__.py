"""Lightning training loops: the voxel CNN (:mod:`.voxel`) and COSNet and its encoders (:mod:`.cosnet`)."""

from __future__ import annotations

from pathlib import Path


def run_checkpoints(run_dir: Path, monitor: str) -> list:
    """``best.ckpt`` (lowest ``monitor``) and ``last.ckpt`` (the latest finished epoch).

    ``last`` needs a callback of its own: Lightning's ``save_last`` on the monitored callback only
    writes when the monitored value improves, so a run killed on a plateau would redo every epoch
    since its best one.
    """
    import lightning as L

    best = L.pytorch.callbacks.ModelCheckpoint(dirpath=Path(run_dir) / "checkpoints", filename="best",
                                               monitor=monitor, mode="min", save_top_k=1,
                                               enable_version_counter=False)
    latest = L.pytorch.callbacks.ModelCheckpoint(dirpath=Path(run_dir) / "checkpoints", filename="last",
                                                 monitor=None, save_top_k=1, enable_version_counter=False)
    return [best, latest]
