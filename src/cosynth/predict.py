"""Rotational-ensemble synthesizability prediction.

For each crystal: build its periodic tiling once, draw E rotations from a generator keyed on
(seed, crystal id), image each rotation, run the CNN and report the mean of the sigmoid outputs
(the likelihood), their standard deviation and whether all E labels agree at the threshold.

Results do not depend on ``batch_size`` or ``workers``: rotations depend only on the seed and
the crystal's id, and the CNN always sees the same fixed chunks of a crystal's rotations
(oneDNN convolutions can differ by one float32 ulp between batch compositions).
"""

from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from cosynth.io import CrystalRecord, iter_crystals
from cosynth.models.store import DEFAULT_MODEL, load_model
from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN
from cosynth.represent.voxel import CrystalImager, SparseImage, crystal_rng, sample_rotations

EVAL_CHUNK = 8  # rotations of one crystal per CNN call; fixed so results never depend on batching
COLUMNS = ["id", "formula", "likelihood", "std", "n_rotations", "consistent", "label", "status", "error"]
ROTATION_COLUMNS = ["id", "rotation", "alpha_deg", "beta_deg", "gamma_deg", "probability"]


@dataclass
class Prediction:
    """Per-crystal table (``crystals``) and, if asked for, one row per crystal × rotation."""

    crystals: pd.DataFrame
    rotations: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)


def read_rotations(path) -> np.ndarray:
    """Angle triples (degrees, xiespp convention) from a CSV with columns alpha, beta, gamma
    (``alpha_deg`` … also accepted) or three unnamed columns."""
    df = pd.read_csv(path)
    for names in (["alpha", "beta", "gamma"], ["alpha_deg", "beta_deg", "gamma_deg"]):
        if all(n in df.columns for n in names):
            return df[names].to_numpy(np.float64)
    if df.shape[1] == 3:
        return df.to_numpy(np.float64)
    raise ValueError(f"{path}: expected columns alpha,beta,gamma (degrees); found {list(df.columns)}")


def _images_for(record: CrystalRecord, angles: np.ndarray | None, ensemble: int, seed: int,
                sampler: str) -> tuple[str, np.ndarray | None, list[SparseImage] | None, str | None]:
    """(id, angles, images, error) for one crystal; errors are returned, never raised."""
    if not record.ok:
        return record.id, None, None, record.error
    try:
        imager = CrystalImager.from_structure(record.structure)
        if angles is None:
            angles = sample_rotations(sampler, ensemble, crystal_rng(seed, record.id))
        images = [imager.image(a, sampler) for a in angles]
    except Exception as err:  # noqa: BLE001 - any failure is this crystal's, not the batch's
        return record.id, None, None, f"{type(err).__name__}: {err}"
    return record.id, angles, images, None


def _job(args):
    return _images_for(*args)


def image_probabilities(model: VoxelCNN, images: list[SparseImage]) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), EVAL_CHUNK):
            batch = SparseBatch.from_images(images[start : start + EVAL_CHUNK])
            out.append(torch.sigmoid(model(batch)).numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def iter_predictions(records: Iterable[CrystalRecord], model: VoxelCNN, *, ensemble: int = 100, seed: int = 0,
                     sampler: str = "haar", rotations: np.ndarray | None = None, threshold: float = 0.5,
                     workers: int = 1, batch_size: int = 32) -> Iterator[tuple[dict, list[dict]]]:
    """Yield (crystal row, per-rotation rows) for each record, in input order, streaming.

    ``workers`` > 1 builds images in that many processes, with at most ``max(batch_size,
    workers)`` crystals imaged ahead of the CNN (memory). Neither changes any number.
    """
    jobs = ((r, rotations, ensemble, seed, sampler) for r in records)
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = _bounded_map(pool, jobs, window=max(batch_size, workers))
    else:
        pool = None
        results = (_images_for(*j) for j in jobs)
    try:
        for rec_id, angles, images, error in results:
            yield _summarise(rec_id, angles, images, error, model, threshold)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _bounded_map(pool, jobs, window: int):
    """Ordered map over a lazy iterable keeping at most ``window`` jobs in flight."""
    from collections import deque

    pending = deque()
    for job in jobs:
        pending.append(pool.submit(_job, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _summarise(rec_id, angles, images, error, model, threshold):
    if error is not None:
        row = {"id": rec_id, "likelihood": np.nan, "std": np.nan, "n_rotations": 0, "consistent": pd.NA,
               "label": pd.NA, "status": "error", "error": error}
        return row, []
    probs = image_probabilities(model, images)
    labels = probs >= threshold
    likelihood = float(probs.mean())
    row = {"id": rec_id, "likelihood": likelihood, "std": float(probs.std()), "n_rotations": len(probs),
           "consistent": bool(labels.all() or not labels.any()), "label": int(likelihood >= threshold),
           "status": "ok", "error": None}
    per_rot = [{"id": rec_id, "rotation": i, "alpha_deg": float(a[0]), "beta_deg": float(a[1]),
                "gamma_deg": float(a[2]), "probability": float(p)} for i, (a, p) in enumerate(zip(angles, probs))]
    return row, per_rot


def predict(inputs, model=DEFAULT_MODEL, *, ensemble: int = 100, seed: int = 0, sampler: str | None = None,
            rotations=None, threshold: float = 0.5, per_rotation: bool = False, workers: int = 1,
            batch_size: int = 32, progress: bool = False, resolve_disorder: str = "error",
            id_column: str | None = None, structure_column: str | None = None) -> Prediction:
    """Synthesizability likelihood of every crystal in ``inputs`` (files, folders, globs,
    tables, pymatgen Structures, ASE Atoms; see :func:`cosynth.io.iter_crystals`).

    ``model`` is a bundled name, a path, or an already loaded :class:`VoxelCNN`. ``sampler``
    defaults to the model's own (``haar`` for cosynth models, ``xiespp`` for imported ones).
    ``rotations`` — explicit (n, 3) angle triples (or a CSV path) applied to every crystal —
    replaces the random ensemble. Bad crystals become rows with status "error".
    """
    if isinstance(model, VoxelCNN):
        net, meta = model.eval(), {"image": {"sampler": sampler or "haar"}, "path": "<in-memory>"}
    else:
        net, meta = load_model(model)
    sampler = sampler or meta.get("image", {}).get("sampler", "haar")
    if rotations is not None and not isinstance(rotations, np.ndarray):
        rotations = read_rotations(rotations) if isinstance(rotations, (str, Path)) else np.asarray(rotations, float)
    if rotations is not None and (rotations.ndim != 2 or rotations.shape[1] != 3 or len(rotations) == 0):
        raise ValueError("rotations must be a non-empty list of (alpha, beta, gamma) triples in degrees")
    if rotations is None and ensemble < 1:
        raise ValueError("ensemble must be at least 1")
    records_iter = iter_crystals(inputs, resolve_disorder=resolve_disorder, id_column=id_column,
                                 structure_column=structure_column)
    formulas: dict[str, str | None] = {}
    domain_scores: dict[str, dict] = {}
    scorer = None
    if meta.get("domain"):
        from cosynth.evaluate.domain import DomainScorer

        scorer = DomainScorer(meta["domain"], net, sampler=sampler, seed=seed)

    def tracked():
        for rec in records_iter:
            formulas[rec.id] = rec.formula
            if scorer is not None and rec.ok:
                try:
                    domain_scores[rec.id] = scorer.score(rec.id, rec.structure)
                except Exception:  # noqa: BLE001 - a domain score is optional, never fatal
                    domain_scores[rec.id] = {}
            yield rec

    rows, rot_rows = [], []
    stream = iter_predictions(tracked(), net, ensemble=ensemble, seed=seed, sampler=sampler, rotations=rotations,
                              threshold=threshold, workers=workers, batch_size=batch_size)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, desc="predict", unit="crystal", file=sys.stderr)
    try:
        for row, per_rot in stream:
            row["formula"] = formulas.pop(row["id"], None)
            row.update(domain_scores.pop(row["id"], {}))
            rows.append(row)
            if per_rotation:
                rot_rows.extend(per_rot)
    except KeyboardInterrupt:
        print(f"interrupted: keeping the {len(rows)} crystals already predicted", file=sys.stderr)
    columns = COLUMNS + (["ad_descriptor", "ad_latent"] if scorer is not None else [])
    crystals = pd.DataFrame(rows, columns=columns)
    crystals["consistent"] = crystals["consistent"].astype("boolean")
    crystals["label"] = crystals["label"].astype("Int64")
    rot_df = pd.DataFrame(rot_rows, columns=ROTATION_COLUMNS) if per_rotation else None
    info = {"model": meta.get("path"), "sampler": sampler, "ensemble": None if rotations is not None else ensemble,
            "explicit_rotations": None if rotations is None else len(rotations), "seed": seed, "threshold": threshold}
    return Prediction(crystals=crystals, rotations=rot_df, meta=info)


def write_table(df: pd.DataFrame, path) -> Path:
    """Write by extension (.csv, .parquet, .json = JSON lines), atomically (temp file + rename)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".json", ".jsonl"):
        raise ValueError(f"{path}: output format from the extension must be .csv, .parquet or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix + ".tmp")
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
