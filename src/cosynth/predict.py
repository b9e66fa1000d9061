"""Predictions for any cosynth model: one table, whatever the family.

* voxel CNN (structure): the rotational ensemble below;
* de-CGCNN (structure), Roost (composition), COSNet (composition + optional structure): one pass;
* a stack (:mod:`cosynth.models.stack`): each member's pass, the trees on the crystal's descriptors,
  and the logistic layer over them.

Every input gets one row with the ``modality`` it used (``structure``, ``composition`` or
``composition+structure``), its ``status`` and, for bad input, an ``error`` in words; the input's
``source`` and a table's extra columns are carried through.

For each crystal of a voxel model: build its periodic tiling once, draw E rotations from a generator keyed on
(seed, crystal id), image each rotation, run the CNN and report the mean of the sigmoid outputs
(the likelihood), their standard deviation and whether all E labels agree at the threshold.

Results do not depend on ``batch_size``, ``workers``, shards or which crystals are predicted
together: rotations depend only on the seed and the crystal's id, the CNN always sees the same
fixed chunks of one crystal's rotations, and the graph families run one crystal per forward pass
(oneDNN convolutions and GEMMs can differ by one float32 ulp between batch compositions).
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from cosynth.io import CrystalRecord, iter_crystals
from cosynth.io.crystals import count_inputs
from cosynth.io.files import read_table, write_table
from cosynth.io.validate import MAX_EXTENT
from cosynth.models.registry import DEFAULT_MODEL, LoadedModel, load_model
from cosynth.models.voxel_cnn.ensemble import crystal_images, image_probabilities, iter_crystal_images
from cosynth.models.voxel_cnn.model import VoxelCNN

__all__ = ["COLUMNS", "Prediction", "image_box_limit", "predict", "predict_records", "write_table"]

COLUMNS = ["id", "formula", "modality", "likelihood", "std", "n_rotations", "consistent", "label", "status", "error",
           "source"]
GRAPH_CHUNK = 256  # records featurised and predicted together by the graph families
ROTATION_COLUMNS = ["id", "rotation", "alpha_deg", "beta_deg", "gamma_deg", "probability"]


def image_box_limit(loaded: LoadedModel) -> float | None:
    """The widest spread of a cell's atoms that the model can take (Å): only the voxel CNN images the
    crystal in its 50 Å box; graph and composition models take any cell (None)."""
    return MAX_EXTENT if loaded.family == "voxel_cnn" else None


@dataclass
class Prediction:
    """Per-crystal table (``crystals``) and, if asked for, one row per crystal × rotation."""

    crystals: pd.DataFrame
    rotations: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)  # model, settings; ``partial`` True when interrupted

    @property
    def partial(self) -> bool:
        """The run was interrupted (Ctrl-C, SIGTERM): ``crystals`` holds the rows finished before it."""
        return bool(self.meta.get("partial"))


def read_rotations(path) -> np.ndarray:
    """Angle triples (degrees, xiespp convention) from a CSV with columns alpha, beta, gamma
    (``alpha_deg`` … also accepted) or three unnamed columns."""
    df = read_table(path)
    for names in (["alpha", "beta", "gamma"], ["alpha_deg", "beta_deg", "gamma_deg"]):
        if all(n in df.columns for n in names):
            return df[names].to_numpy(np.float64)
    if df.shape[1] == 3:
        return df.to_numpy(np.float64)
    raise ValueError(f"{path}: expected columns alpha,beta,gamma (degrees); found {list(df.columns)}")


def _structure_needed(record: CrystalRecord, family: str) -> str:
    """The error of a record a structure model cannot use, in words."""
    if record.status == "formula_only":
        return f"the {family} model needs a structure; this row has a formula only ({record.error})"
    return record.error or "no structure"


def _job(kwargs):
    record = kwargs.pop("record")
    return crystal_images(record, **kwargs)


def iter_predictions(records: Iterable[CrystalRecord], model: VoxelCNN, *, ensemble: int = 100, seed: int = 0,
                     sampler: str = "haar", rotations: np.ndarray | None = None, threshold: float = 0.5,
                     workers: int = 1, batch_size: int = 32) -> Iterator[tuple[dict, list[dict]]]:
    """Yield (crystal row, per-rotation rows) for each record, in input order, streaming.

    With one worker, a background thread images the next crystals while the CNN runs; ``workers``
    > 1 builds images in that many processes, with at most ``max(batch_size, workers)`` crystals
    imaged ahead of the CNN (memory). Neither changes any number.
    """
    options = {"ensemble": ensemble, "seed": seed, "sampler": sampler, "rotations": rotations}
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = _bounded_map(pool, ({"record": r, **options} for r in records), window=max(batch_size, workers))
    else:
        pool = None
        results = iter_crystal_images(records, **options)
    try:
        for item in results:
            yield _summarise(item.id, item.angles, item.images, item.error, model, threshold)
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
        row = {"id": rec_id, "modality": None, "likelihood": np.nan, "std": np.nan, "n_rotations": 0,
               "consistent": pd.NA, "label": pd.NA, "status": "error", "error": error}
        return row, []
    probs = image_probabilities(model, images)
    labels = probs >= threshold
    likelihood = float(probs.mean())
    row = {"id": rec_id, "modality": "structure", "likelihood": likelihood, "std": float(probs.std()),
           "n_rotations": len(probs),
           "consistent": bool(labels.all() or not labels.any()), "label": int(likelihood >= threshold),
           "status": "ok", "error": None}
    per_rot = [{"id": rec_id, "rotation": i, "alpha_deg": float(a[0]), "beta_deg": float(a[1]),
                "gamma_deg": float(a[2]), "probability": float(p)} for i, (a, p) in enumerate(zip(angles, probs))]
    return row, per_rot


def predict(inputs, model=DEFAULT_MODEL, *, ensemble: int = 100, seed: int = 0, sampler: str | None = None,
            rotations=None, threshold: float | None = None, per_rotation: bool = False, workers: int = 1,
            batch_size: int = 32, progress: bool = False, resolve_disorder: str = "error",
            id_column: str | None = None, structure_column: str | None = None, formula_column: str | None = None,
            formulas: Iterable[str] | None = None, skip_ids: Iterable[str] | None = None,
            precision: str = "auto", shard: tuple[int, int] | None = None) -> Prediction:
    """Predictions of ``model`` for every crystal or formula in ``inputs``.

    Args:
        inputs: files, folders, globs, tables (a ``formula`` column with no structure is fine
            for composition models), CIF text, pymatgen Structures, ASE Atoms or DataFrames
            (see :func:`cosynth.io.iter_crystals`).
        model: a bundled name, a model file, a :class:`LoadedModel` or a bare network.
        ensemble, seed, sampler, rotations, per_rotation: the voxel rotational ensemble: E
            random rotations from (seed, crystal id) with the model's own sampler unless
            ``sampler`` is given, or explicit angle triples (degrees, array or CSV path).
        threshold: likelihood at or above which ``label`` is 1 (classification models); default:
            the threshold stored in the model file (fixed on validation by the benchmark), else 0.5.
        workers, batch_size: image-building processes and look-ahead (no effect on results).
        formulas: formulas to predict besides ``inputs`` (composition models), e.g. ``["SiO2"]``.
        skip_ids: crystal ids already predicted (a resumed run): they get no row.
        precision: voxel CNN arithmetic, ``auto`` (bf16 where the CPU or GPU has native bf16
            matrix units, else fp32), ``fp32`` or ``bf16``; ``xiespp`` parity runs use fp32.
        shard: ``(i, N)``: only the crystals of shard i of N, chosen by crystal id (Slurm arrays;
            the union of the N shards is this run without ``shard``).

    Returns:
        A :class:`Prediction` whose ``crystals`` table has one row per input, in input order. On
        Ctrl-C or SIGTERM it returns the rows finished so far with ``partial`` set.
    """
    loaded = load_model(model)
    total = count_inputs(inputs) if progress and inputs is not None and shard is None else None
    if formulas is not None:
        extra = pd.DataFrame({"id": list(formulas), "formula": list(formulas)})
        inputs = [*_items(inputs), extra] if inputs is not None else [extra]
    records = iter_crystals(inputs, resolve_disorder=resolve_disorder, id_column=id_column,
                            structure_column=structure_column, formula_column=formula_column, shard=shard,
                            max_extent=image_box_limit(loaded))
    if skip_ids is not None:
        done = set(skip_ids)
        records = (r for r in records if r.id not in done)
        total = None if total is None else max(total - len(done), 0)
    return predict_records(records, loaded, ensemble=ensemble, seed=seed, sampler=sampler, rotations=rotations,
                           threshold=threshold, per_rotation=per_rotation, workers=workers, batch_size=batch_size,
                           progress=progress, total=total, precision=precision)


def predict_records(records: Iterable[CrystalRecord], model, *, ensemble: int = 100, seed: int = 0,
                    sampler: str | None = None, rotations=None, threshold: float | None = None,
                    per_rotation: bool = False, workers: int = 1, batch_size: int = 32, progress: bool = False,
                    total: int | None = None, precision: str = "auto") -> Prediction:
    """Predictions for records already read (:func:`predict` reads them; ``cosynth screen``'s
    actors get them from its parse tasks). Same options as :func:`predict`; ``total`` sizes the
    progress bar."""
    if workers < 1 or batch_size < 1:
        raise ValueError("workers and batch_size must be at least 1")
    loaded = load_model(model)
    threshold = float(loaded.meta.get("threshold", 0.5)) if threshold is None else threshold
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], not {threshold}")
    if loaded.family == "voxel_cnn":
        return _predict_voxel(records, loaded, ensemble=ensemble, seed=seed, sampler=sampler, rotations=rotations,
                              threshold=threshold, per_rotation=per_rotation, workers=workers,
                              batch_size=batch_size, progress=progress, total=total, precision=precision)
    return _predict_graph(records, loaded, threshold=threshold, progress=progress, total=total)


def _items(inputs) -> list:
    if isinstance(inputs, (str, Path, pd.DataFrame)) or not isinstance(inputs, Iterable):
        return [inputs]
    return list(inputs)


def _progress(stream, progress: bool, total: int | None = None):
    if not progress:
        return stream
    from tqdm import tqdm

    return tqdm(stream, desc="predict", unit="crystal", total=total, file=sys.stderr)


def _with_inputs(row: dict, record: CrystalRecord) -> dict:
    """The input's formula, source and extra table columns on its output row."""
    row["formula"] = record.formula
    row["source"] = record.source
    for key, value in record.extra.items():
        row.setdefault(key if key not in COLUMNS else f"input_{key}", value)
    return row


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    extra = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in columns]
    frame = pd.DataFrame(rows, columns=columns + extra)
    for col, dtype in (("consistent", "boolean"), ("label", "Int64")):
        if col in frame:
            frame[col] = frame[col].astype(dtype)
    return frame


def _predict_voxel(records, loaded: LoadedModel, *, ensemble, seed, sampler, rotations, threshold, per_rotation,
                   workers, batch_size, progress, total=None, precision="auto") -> Prediction:
    net, meta = loaded.network, loaded.meta
    sampler = sampler or loaded.sampler or "haar"
    net.set_precision("fp32" if sampler == "xiespp" and precision == "auto" else precision)
    if rotations is not None and not isinstance(rotations, np.ndarray):
        rotations = read_rotations(rotations) if isinstance(rotations, (str, Path)) else np.asarray(rotations, float)
    if rotations is not None and (rotations.ndim != 2 or rotations.shape[1] != 3 or len(rotations) == 0):
        raise ValueError("rotations must be a non-empty list of (alpha, beta, gamma) triples in degrees")
    if rotations is None and ensemble < 1:
        raise ValueError("ensemble must be at least 1")
    seen: dict[str, CrystalRecord] = {}
    domain_scores: dict[str, dict] = {}
    scorer = None
    if meta.get("domain"):
        from cosynth.models.domain import DomainScorer

        scorer = DomainScorer(meta["domain"], net, sampler=sampler, seed=seed)

    def tracked():
        for rec in records:
            seen[rec.id] = rec
            if rec.status == "formula_only":
                rec = dataclasses.replace(rec, error=_structure_needed(rec, "voxel_cnn"))
            if scorer is not None and rec.ok:
                try:
                    domain_scores[rec.id] = scorer.score(rec.id, rec.structure)
                except Exception:  # noqa: BLE001 - a domain score is optional, never fatal
                    domain_scores[rec.id] = {}
            yield rec

    rows, rot_rows = [], []
    stream = iter_predictions(tracked(), net, ensemble=ensemble, seed=seed, sampler=sampler, rotations=rotations,
                              threshold=threshold, workers=workers, batch_size=batch_size)
    try:
        for row, per_rot in _progress(stream, progress, total):
            row = _with_inputs(row, seen.pop(row["id"]))
            row.update(domain_scores.pop(row["id"], {}))
            rows.append(row)
            if per_rotation:
                rot_rows.extend(per_rot)
    except KeyboardInterrupt:
        partial = True
    else:
        partial = False
    columns = COLUMNS + (["ad_descriptor", "ad_latent"] if scorer is not None else [])
    rot_df = pd.DataFrame(rot_rows, columns=ROTATION_COLUMNS) if per_rotation else None
    info = {"model": loaded.path, "family": loaded.family, "sampler": sampler, "precision": net.precision,
            "ensemble": None if rotations is not None else ensemble,
            "explicit_rotations": None if rotations is None else len(rotations), "seed": seed, "threshold": threshold,
            "partial": partial}
    return Prediction(crystals=_frame(rows, columns), rotations=rot_df, meta=info)


def _graph_columns(loaded: LoadedModel) -> list[str]:
    value = ["likelihood", "label"] if loaded.task == "classification" else ["prediction"]
    extra = ["composition_weight"] if loaded.family == "cosnet" else []
    if loaded.family == "stack" and loaded.meta["config"].get("hull"):
        from cosynth.represent.energy import ABOVE_HULL

        extra = [ABOVE_HULL]  # what the trees read of the crystal's energy: a user sees why it ranks low
    return ["id", "formula", "modality", *value, *extra, "status", "error", "source"]


def _predict_graph(records, loaded: LoadedModel, *, threshold: float, progress: bool,
                   total: int | None = None) -> Prediction:
    """Roost, de-CGCNN and COSNet: featurise a chunk of records, one forward pass, one row each."""
    rows: list[dict] = []
    chunk: list[CrystalRecord] = []
    try:
        for record in _progress(records, progress, total):
            chunk.append(record)
            if len(chunk) >= GRAPH_CHUNK:
                rows.extend(_graph_chunk(chunk, loaded, threshold))
                chunk = []
        if chunk:
            rows.extend(_graph_chunk(chunk, loaded, threshold))
    except KeyboardInterrupt:
        partial = True
    else:
        partial = False
    info = {"model": loaded.path, "family": loaded.family, "task": loaded.task, "threshold": threshold,
            "partial": partial}
    return Prediction(crystals=_frame(rows, _graph_columns(loaded)), meta=info)


@contextmanager
def torch_threads(n: int):
    """Run the block on ``n`` torch intra-op threads, then restore the caller's count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _ChunkGraphs:
    """The graphs of one chunk's crystals, built once however many stack members read them."""

    def __init__(self):
        self._compositions, self._crystals = {}, {}

    def composition(self, formula: str, embedding):
        from cosynth.represent.composition import composition_graph

        key = (formula, embedding)
        if key not in self._compositions:
            self._compositions[key] = composition_graph(formula, embedding)
        return self._compositions[key]

    def crystal(self, record: CrystalRecord):
        from cosynth.represent.graph import crystal_graph

        if id(record) not in self._crystals:
            self._crystals[id(record)] = crystal_graph(record.structure)
        return self._crystals[id(record)]


def _graph_chunk(chunk: list[CrystalRecord], loaded: LoadedModel, threshold: float,
                 graphs: _ChunkGraphs | None = None) -> list[dict]:
    from cosynth.models.bimodal_data import BimodalRows, predict_rows

    family, config = loaded.family, loaded.meta["config"]
    if family == "stack":
        return _stack_chunk(chunk, loaded, threshold)
    graphs = graphs or _ChunkGraphs()
    embedding = config.get("embedding")
    rows, usable = [], []
    for record in chunk:
        row = _with_inputs({"id": record.id, "modality": None, "status": "error", "error": None}, record)
        rows.append(row)
        wants_structure = family in ("cgcnn", "cosnet") and record.ok
        if family == "cgcnn" and not record.ok:
            row["error"] = _structure_needed(record, family)
            continue
        if family != "cgcnn" and not record.has_formula:
            row["error"] = record.error or "no formula"
            continue
        try:
            comp = graphs.composition(record.formula, embedding)  # batches always carry compositions
            graph = graphs.crystal(record) if wants_structure else None
        except Exception as err:  # noqa: BLE001 - one bad row is that row's error
            row["error"] = f"cannot featurise {record.formula or record.id}: {err}"
            continue
        usable.append((row, comp, graph))
    if usable:
        graphs = [g for _, _, g in usable]
        has = np.array([g is not None for g in graphs])
        n = len(usable)
        batch_rows = BimodalRows([r["id"] for r, _, _ in usable], [r["formula"] for r, _, _ in usable],
                                 [c for _, c, _ in usable], graphs, np.zeros(n, dtype=np.float32), has, has.copy())
        # one crystal per forward pass: a batch's other crystals change float rounding (GEMM blocking), and a
        # crystal's numbers must not depend on which crystals share its shard, worker or chunk (~7 ms each);
        # on one intra-op thread, since the thread count splits reductions too (1 vs 2 threads moved a
        # composition weight by 1.8e-7), and a Ray actor or Slurm task has its own count
        with torch_threads(1):
            result = predict_rows(loaded.network, batch_rows, loaded.target_scale, batch_size=1)
        values = _calibrated(result["prediction"].reshape(n, -1)[:, 0], loaded)
        for k, (row, _, graph) in enumerate(usable):
            modality = {"roost": "composition", "cgcnn": "structure"}.get(
                family, "composition+structure" if graph is not None else "composition")
            _fill(row, values[k], modality, loaded.task, threshold)
            if "w_c" in result:
                row["composition_weight"] = float(result["w_c"][k])
    return rows


def _calibrated(values: np.ndarray, loaded: LoadedModel, calibration: dict | None = None) -> np.ndarray:
    """A classifier's logits through its Platt scaling fixed on validation (if it has one)."""
    calibration = calibration or (loaded.meta.get("calibration") if loaded.task == "classification" else None)
    return values if calibration is None else calibration["a"] * values + calibration["b"]


def _fill(row: dict, value: float, modality: str, task: str, threshold: float) -> None:
    """A row's prediction: a likelihood and label from a logit, or a value."""
    row["modality"], row["status"] = modality, "ok"
    if task == "classification":
        row["likelihood"] = float(1.0 / (1.0 + np.exp(-value)))
        row["label"] = int(row["likelihood"] >= threshold)
    else:
        row["prediction"] = float(value)


def _stack_chunk(chunk: list[CrystalRecord], loaded: LoadedModel, threshold: float) -> list[dict]:
    """A stack: every member on the chunk, the trees on each structure's descriptors, the layer over
    them; a formula-only row gets the composition member alone (with that member's calibration)."""
    from cosynth.models.stack import TREES, likelihood_logit
    from cosynth.represent.descriptors import compute_descriptors
    from cosynth.represent.energy import ABOVE_HULL

    stack, config = loaded.network, loaded.meta["config"]
    names = [m["name"] for m in config["members"]]
    graphs = _ChunkGraphs()
    member_rows = {name: _graph_chunk(chunk, stack.member(name), 0.5, graphs) for name in names}
    structured = [k for k, record in enumerate(chunk) if record.ok]
    trees, energy = None, {}
    if TREES in config["inputs"] and structured:
        formulas = [chunk[k].formula for k in structured]
        structures = [chunk[k].structure for k in structured]
        described = stack.with_energy(compute_descriptors(formulas, structures, use_cache=False), formulas, structures)
        trees = dict(zip(structured, stack.tree_probability(described, formulas)))
        if ABOVE_HULL in described:
            energy = dict(zip(structured, described[ABOVE_HULL].to_numpy(float)))
    composition = config.get("composition_member")
    rows = []
    for k, record in enumerate(chunk):
        row = _with_inputs({"id": record.id, "modality": None, "status": "error", "error": None}, record)
        rows.append(row)
        outs = {name: member_rows[name][k] for name in names}
        if not record.ok:
            if composition is None:
                row["error"] = _structure_needed(record, "stack")
            elif outs[composition]["status"] != "ok":
                row["error"] = outs[composition]["error"]
            else:
                value = _calibrated(likelihood_logit([outs[composition]["likelihood"]]), loaded,
                                    config["composition_calibration"])[0]
                _fill(row, value, "composition", "classification", threshold)
            continue
        failed = [out["error"] for out in outs.values() if out["status"] != "ok"]
        if failed:
            row["error"] = failed[0]
            continue
        logits = {name: likelihood_logit([out["likelihood"]]) for name, out in outs.items()}
        value = _calibrated(stack.logit(logits, None if trees is None else np.array([trees[k]])), loaded)[0]
        if k in energy:
            row[ABOVE_HULL] = float(energy[k])
        _fill(row, value, "composition+structure" if composition else "structure", "classification", threshold)
    return rows

