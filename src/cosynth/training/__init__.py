"""Lightning training loops: the voxel CNN (:mod:`.voxel`) and Roost, de-CGCNN and COSNet (:mod:`.bimodal`),
on the shared skeleton of :mod:`.run`."""

from cosynth.training.run import run_checkpoints

__all__ = ["run_checkpoints"]
