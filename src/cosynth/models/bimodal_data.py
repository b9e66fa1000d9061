"""Rows of (composition, optional structure, target) → batches for Roost, de-CGCNN and COSNet.

``featurize`` turns a frame with ``id``, ``formula``, ``cif`` and ``target`` into
``BimodalRows`` (a composition graph per row, a crystal graph or None, a presence flag) and a
per-row problems table: rows with an unparsable formula or a missing target are skipped; a row
whose CIF cannot be read keeps its composition and loses its structure. Modes and the
modal-availability augmentation act on ``BimodalRows`` so that every model shares one pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from cosynth.represent.composition import DEFAULT_EMBEDDING, CompositionBatch, composition_graph
from cosynth.represent.graph import GraphBatch, GraphCache

MODES = ("composition", "bimodal", "bimodal_aug")


@dataclass
class BimodalRows:
    ids: list
    formulas: list
    comp: list  # CompositionGraph per row
    graphs: list  # CrystalGraph or None per row
    target: np.ndarray  # float32 (n,) or (n, k)
    has_structure: np.ndarray  # bool: a usable structure exists in the data
    present: np.ndarray  # bool: the model sees the structure (p_s)
    augmented: np.ndarray = field(default=None)  # bool: structure-less copy made by augmentation
    weight: np.ndarray = field(default=None)  # float32 training-loss weight of each row (ones by default)

    def __post_init__(self):
        if self.augmented is None:
            self.augmented = np.zeros(len(self.ids), dtype=bool)
        if self.weight is None:
            self.weight = np.ones(len(self.ids), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def targets(self) -> np.ndarray:
        """The targets as (n, k) columns: the first is the label or property, the rest auxiliary."""
        return self.target.reshape(len(self), -1)

    def subset(self, idx) -> "BimodalRows":
        idx = np.asarray(idx, dtype=np.int64)
        return BimodalRows([self.ids[i] for i in idx], [self.formulas[i] for i in idx], [self.comp[i] for i in idx],
                           [self.graphs[i] for i in idx], self.target[idx], self.has_structure[idx],
                           self.present[idx], self.augmented[idx], self.weight[idx])

    @property
    def volume_per_atom(self) -> np.ndarray:
        return np.array([g.volume_per_atom if g is not None else np.nan for g in self.graphs])

    def composition_keys(self) -> list[tuple]:
        """Normalised composition of each row (element, rounded fraction), order-free."""
        return [tuple(zip(c.symbols, np.round(c.fractions, 6).tolist())) for c in self.comp]


def featurize(frame: pd.DataFrame, *, embedding: str = DEFAULT_EMBEDDING, cache: GraphCache | None = None,
              split: str = "", progress: bool = False) -> tuple[BimodalRows, pd.DataFrame]:
    """(rows, problems) of a frame with ``id``, ``formula``, ``cif`` (text or None), ``target``
    (and an optional ``aux``: an auxiliary target, NaN where unknown, as a second target column).

    Rows with a non-finite target or an unparsable formula are skipped; a row whose CIF cannot be read
    keeps its composition and loses its structure. Each is listed in ``problems``.

    Args:
        frame: the input rows (a missing ``cif`` column means no structures).
        embedding: the element embedding of the composition graphs.
        cache: crystal-graph cache (default: a new :class:`GraphCache`).
        split: the split name written into ``problems``.
        progress: a progress bar while graphs are built.

    Returns:
        The :class:`BimodalRows` and a problems frame (id, split, action, error).
    """
    cache = cache or GraphCache()
    problems = []
    keep, comps = [], []
    for i, (rid, formula, y) in enumerate(zip(frame["id"], frame["formula"], frame["target"])):
        y_arr = np.atleast_1d(np.asarray(y, dtype=np.float64))
        if not np.all(np.isfinite(y_arr)):
            problems.append({"id": rid, "split": split, "action": "skipped", "error": f"target {y!r} is not a finite number"})
            continue
        try:
            comps.append(composition_graph(formula, embedding))
        except ValueError as err:
            problems.append({"id": rid, "split": split, "action": "skipped", "error": str(err)})
            continue
        keep.append(i)
    sub = frame.iloc[keep]
    cifs = [c if isinstance(c, str) and c.strip() else None for c in sub["cif"]] if "cif" in sub else [None] * len(sub)
    with_cif = [j for j, c in enumerate(cifs) if c is not None]
    built, errors = cache.get_many([cifs[j] for j in with_cif], progress=progress)
    graphs = [None] * len(sub)
    for k, j in enumerate(with_cif):
        graphs[j] = built[k]
        if k in errors:
            problems.append({"id": sub["id"].iloc[j], "split": split, "action": "structure ignored", "error": errors[k]})
    has = np.array([g is not None for g in graphs], dtype=bool)
    target = np.asarray(sub["target"].tolist(), dtype=np.float32)
    if "aux" in sub:  # auxiliary targets beside a label (NaN where unknown): more target columns
        aux = np.asarray(pd.to_numeric(sub["aux"], errors="coerce"), dtype=np.float32)
        target = np.column_stack([target, aux])
    weight = (np.asarray(pd.to_numeric(sub["weight"], errors="coerce").fillna(1.0), dtype=np.float32)
              if "weight" in sub else None)
    rows = BimodalRows(list(sub["id"]), list(sub["formula"]), comps, graphs, target, has, has.copy(), weight=weight)
    return rows, pd.DataFrame(problems, columns=["id", "split", "action", "error"])


def apply_mode(rows: BimodalRows, mode: str, *, train: bool) -> BimodalRows:
    """Composition-only hides every structure; ``bimodal_aug`` augments the training split only.

    Args:
        rows: the rows.
        mode: one of :data:`MODES`.
        train: whether these are training rows (only they are augmented).

    Returns:
        The rows for that mode (``bimodal``, and ``bimodal_aug`` outside training, return ``rows`` unchanged).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "composition":
        return replace(rows, present=np.zeros(len(rows), dtype=bool))
    if mode == "bimodal_aug" and train:
        return augment(rows)
    return rows


def augment(rows: BimodalRows) -> BimodalRows:
    """Modal-availability augmentation: for each composition with exactly one structure among
    these rows, append a copy of that row without its structure (p_s = 0)."""
    keys = rows.composition_keys()
    counts: dict = {}
    for key, p in zip(keys, rows.present):
        if p:
            counts[key] = counts.get(key, 0) + 1
    extra = [i for i, (key, p) in enumerate(zip(keys, rows.present)) if p and counts[key] == 1]
    if not extra:
        return rows
    copies = rows.subset(extra)
    copies = replace(copies, present=np.zeros(len(extra), dtype=bool), augmented=np.ones(len(extra), dtype=bool))
    return concat_rows([rows, copies])


def concat_rows(parts: list[BimodalRows]) -> BimodalRows:
    return BimodalRows(sum((p.ids for p in parts), []), sum((p.formulas for p in parts), []),
                       sum((p.comp for p in parts), []), sum((p.graphs for p in parts), []),
                       np.concatenate([p.target for p in parts]), np.concatenate([p.has_structure for p in parts]),
                       np.concatenate([p.present for p in parts]), np.concatenate([p.augmented for p in parts]),
                       np.concatenate([p.weight for p in parts]))


def keep_structure_fraction(rows: BimodalRows, fraction: float, seed: int) -> BimodalRows:
    """Hide the structure of all but ``fraction`` of the rows whose structure is present (chosen by seed).

    Hidden rows lose their graph and count as having no structure.

    Args:
        rows: the rows.
        fraction: the share of those rows that keep their structure (rounded to whole rows).
        seed: seed of the choice.

    Returns:
        The new rows.
    """
    idx = np.flatnonzero(rows.present)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    n_keep = int(round(fraction * len(idx)))
    kept = np.zeros(len(rows), dtype=bool)
    kept[rng.permutation(idx)[:n_keep]] = True
    return replace(rows, present=rows.present & kept, has_structure=rows.has_structure & kept,
                   graphs=[g if k else None for g, k in zip(rows.graphs, kept)])


@dataclass
class BimodalBatch:
    comp: CompositionBatch
    graphs: GraphBatch | None  # graphs of the rows listed in graph_rows
    graph_rows: torch.Tensor  # (n_graphs,) row of each graph
    present: torch.Tensor  # (n,) p_s
    target: torch.Tensor
    n: int
    weight: torch.Tensor | None = None  # (n,) loss weights; None when all are 1


class BimodalDataset(torch.utils.data.Dataset):
    """Index dataset; ``collate`` builds a whole batch at once (cheap, no per-item tensors)."""

    def __init__(self, rows: BimodalRows, scale: float = 1.0, graphs_when_absent: bool = False):
        self.rows, self.scale = rows, float(scale)
        self.graphs_when_absent = graphs_when_absent

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx: list[int]) -> BimodalBatch:
        r = self.rows
        comp = CompositionBatch.collate([r.comp[i] for i in idx])
        use = [j for j, i in enumerate(idx) if r.graphs[i] is not None and (r.present[i] or self.graphs_when_absent)]
        graphs = GraphBatch.collate([r.graphs[idx[j]] for j in use]) if use else None
        y = torch.from_numpy(r.target[idx] / self.scale)
        if y.dim() == 1:
            y = y.unsqueeze(1)
        w = r.weight[idx]
        return BimodalBatch(comp, graphs, torch.tensor(use, dtype=torch.int64),
                            torch.from_numpy(r.present[idx].astype(np.float32)), y, len(idx),
                            None if np.all(w == 1) else torch.from_numpy(w.astype(np.float32)).unsqueeze(1))


@torch.no_grad()
def predict_rows(model, rows: BimodalRows, scale: float, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Predictions (original units), composition weight and C of each row (eval mode).

    Args:
        model: a COSNet (with ``parts``) or another model of these batches; a Roost encoder gives C.
        rows: the rows.
        scale: the target scale the model was trained on (predictions are multiplied by it).
        batch_size: rows per batch.

    Returns:
        {"prediction"} and, where the model gives them, ``w_c`` (mean composition weight), ``w_c_norm``
        and ``C`` (the composition representation).
    """
    model.eval()
    ds = BimodalDataset(rows, scale)
    out, wc, C = [], [], []
    for start in range(0, len(ds), batch_size):
        batch = ds.collate(list(range(start, min(start + batch_size, len(ds)))))
        if hasattr(model, "parts"):
            parts = model.parts(batch)
            out.append(parts["out"]), wc.append(parts["w_c"]), C.append(parts["C"])
        else:
            out.append(model(batch))
            if hasattr(model.encoder, "pool"):  # Roost: its encoding is the C of COSNet
                C.append(model.encoder(batch.comp))
    pred = torch.cat(out).numpy()
    res = {"prediction": pred * scale}
    if wc:
        w = torch.cat(wc).numpy()
        res["w_c"] = w.mean(1)
        res["w_c_norm"] = np.linalg.norm(w, axis=1)
    if C:
        res["C"] = torch.cat(C).numpy()
    return res
