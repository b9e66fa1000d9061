"""Linear probe: does a voxel CNN's frozen convolutional output carry a table's label?

When a CNN trained on a dataset stays near chance, two explanations compete: training has not yet
found the signal (more epochs would help), or the images carry little of it at this data scale.
The probe separates them from the other side: it freezes the convolutions of any voxel model — a
random initialisation, the published XIE-SPP weights learned on ~10^5 crystals, a model trained on
another dataset — and fits only a regularised logistic regression on the train split's
rotation-averaged features. Validation and test AUCs near 0.5 for all of them say that features of
this architecture do not make the label linearly visible.

    cosynth probe TABLE --model random \\
        --model xiespp=../shared/reference/xiespp/weights0500.h5 --model mixed=runs/…/model.pt -o probe.json
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN

ROTATIONS = 3  # per crystal; the features are averaged over them


def named_model(spec: str, seed: int = 0) -> tuple[str, VoxelCNN]:
    """``random`` (Glorot initialisation from ``seed``), ``NAME=file.h5`` (published Keras weights) or
    ``NAME=model.pt`` / a bundled model name: (name, model in eval mode)."""
    from cosynth.models.registry import load_model
    from cosynth.models.voxel_cnn.model import load_keras_weights

    if spec == "random":
        torch.manual_seed(seed)
        return "random", VoxelCNN().eval()
    name, _, where = spec.rpartition("=")
    name = name or Path(where).stem
    if where.endswith(".h5"):
        return name, load_keras_weights(VoxelCNN(), where).eval()
    return name, load_model(where).network


def conv_features(models: dict[str, VoxelCNN], imagers, ids, *, rotations: int = ROTATIONS, seed: int = 0,
                  batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per model, (n, 2F): each filter's max and mean over the final 2³ cells, averaged over ``rotations``
    seeded random rotations per crystal (the same images for every model).

    Args:
        models: name → voxel model (used frozen, without gradients).
        imagers, ids: aligned crystal imagers and ids (ids key the rotations).
        rotations: rotations per crystal.
        seed: rotation seed.
        batch_size: crystals per batch.

    Returns:
        Model name → (n, 2F) feature array.
    """
    from cosynth.represent.voxel import crystal_rng, sample_rotations

    n = len(imagers)
    out = {name: np.zeros((n, 2 * m.conv3.out_channels)) for name, m in models.items()}
    with torch.no_grad():
        for start in range(0, n, batch_size):
            rows = range(start, min(start + batch_size, n))
            for r in range(rotations):
                images = [imagers[i].image(sample_rotations("haar", 1, crystal_rng(seed, ids[i], r))[0], "haar")
                          for i in rows]
                batch = SparseBatch.from_images(images)
                for name, model in models.items():
                    x = model.conv_features(batch)
                    summary = torch.cat([x.amax(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4))], dim=1)
                    out[name][start:start + len(images)] += summary.numpy() / rotations
    return out


def probe(table, models: dict[str, VoxelCNN], *, label: str = "label", split_column: str = "split",
          id_column: str | None = None, structure_column: str | None = None, rotations: int = ROTATIONS,
          seed: int = 0) -> dict:
    """Train-split logistic regression on each model's frozen features; AUC on the train, val and test splits.

    Rows the trainer's loader rejects (a structure that cannot be read or fails validation, a label that
    is not 0 or 1) are counted in ``skipped`` and left out.

    Args:
        table: the table (path or frame) with label and split columns.
        models: name → voxel model (see :func:`named_model`).
        label, split_column: the label and split columns.
        id_column, structure_column: the id and structure columns (None: found as the trainer does).
        rotations, seed: rotations per crystal and their seed.

    Returns:
        {"rotations", "seed", "skipped", "rows"}: one row per model with the feature count and, per split,
        the AUC (None when the split lacks a class) and the number of rows.

    Raises:
        ValueError: the train split lacks a class.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cosynth.represent.voxel import CrystalImager
    from cosynth.training.voxel import _load_rows, _read_table, _table_split

    frame = _read_table(table)
    ids, structures, labels, _, errors, positions = _load_rows(frame, label, None, id_column, structure_column)
    parts = _table_split(frame, split_column, positions)
    if len(set(labels[parts["train"]])) < 2:
        raise ValueError("the probe needs both classes in the train split")
    imagers = [CrystalImager.from_structure(s) for s in structures]
    features = conv_features(models, imagers, ids, rotations=rotations, seed=seed)
    rows = []
    for name, X in features.items():
        train = parts["train"]
        clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, max_iter=5000, scoring="roc_auc"))
        with warnings.catch_warnings():  # scikit-learn's notice about its own attribute names
            warnings.simplefilter("ignore", FutureWarning)
            clf.fit(X[train], labels[train])
        row = {"model": name, "features": int(X.shape[1])}
        for part in ("train", "val", "test"):
            idx = parts[part]
            row[f"{part}_auc"] = (round(float(roc_auc_score(labels[idx], clf.predict_proba(X[idx])[:, 1])), 3)
                                  if len(set(labels[idx])) == 2 else None)
            row[f"{part}_rows"] = int(len(idx))
        rows.append(row)
    return {"rotations": rotations, "seed": seed, "skipped": len(errors), "rows": rows}
