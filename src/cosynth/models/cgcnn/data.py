"""CGCNN data: the shared bimodal pipeline restricted to rows that have a usable structure."""

import numpy as np

from cosynth.models.bimodal_data import BimodalDataset, BimodalRows, featurize


def structure_rows(frame, **kwargs) -> tuple[BimodalRows, object]:
    """(rows with a structure, problems); rows without a usable structure are reported and left out."""
    rows, problems = featurize(frame, **kwargs)
    no = [rows.ids[i] for i in np.flatnonzero(~rows.has_structure)]
    if no:
        import pandas as pd

        extra = pd.DataFrame({"id": no, "split": kwargs.get("split", ""), "action": "skipped",
                              "error": "no usable structure (CGCNN needs one)"})
        problems = pd.concat([problems, extra], ignore_index=True)
    return rows.subset(np.flatnonzero(rows.has_structure)), problems


__all__ = ["BimodalDataset", "structure_rows"]
