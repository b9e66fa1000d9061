"""Roost inputs: a composition as a fully connected graph of its elements.

Each element is a node carrying its (normalised) fraction and an element embedding from the
``elementembeddings`` package; edges join every ordered pair of elements, self-pairs included,
so that a single-element composition still passes messages.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_EMBEDDING = "matscholar200"
# friendly names → names the elementembeddings package uses
_ALIASES = {"matscholar200": "matscholar", "matscholar": "matscholar"}


@functools.lru_cache(maxsize=None)
def element_embedding(name: str = DEFAULT_EMBEDDING) -> tuple[dict[str, int], torch.Tensor]:
    """({symbol: row}, matrix) of an elementembeddings embedding; NaNs (magpie gaps) become 0."""
    from elementembeddings.core import Embedding

    emb = Embedding.load_data(_ALIASES.get(name, name))
    symbols = list(emb.embeddings)
    matrix = np.stack([np.asarray(emb.embeddings[s], dtype=np.float32) for s in symbols])
    matrix = np.nan_to_num(matrix, nan=0.0)
    return {s: i for i, s in enumerate(symbols)}, torch.from_numpy(matrix)


@dataclass
class CompositionGraph:
    """One composition: element rows into the embedding matrix and their fractions (sum 1)."""

    elements: np.ndarray  # int64, rows into the embedding matrix
    fractions: np.ndarray  # float32, sums to 1
    symbols: tuple[str, ...]


def parse_formula(formula: str) -> dict[str, float]:
    """Element amounts of a formula (pymatgen), or ValueError with the reason."""
    from pymatgen.core import Composition

    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(f"empty formula {formula!r}")
    try:
        comp = Composition(formula.strip())
    except Exception as err:  # pymatgen raises several types for bad formulas
        raise ValueError(f"cannot parse formula {formula!r}: {err}") from None
    amounts = {}
    for el, amt in comp.get_el_amt_dict().items():
        if amt < 0:
            raise ValueError(f"negative amount of {el} in {formula!r}")
        if amt > 0:
            amounts[el] = amounts.get(el, 0.0) + float(amt)
    if not amounts:
        raise ValueError(f"formula {formula!r} has no elements")
    return amounts


def composition_graph(formula: str, embedding: str = DEFAULT_EMBEDDING) -> CompositionGraph:
    """Roost graph of ``formula``; ValueError for unparsable formulas or elements without embedding."""
    index, _ = element_embedding(embedding)
    amounts = parse_formula(formula)
    missing = [el for el in amounts if el not in index]
    if missing:
        raise ValueError(f"element(s) {', '.join(missing)} of {formula!r} have no {embedding} embedding")
    symbols = tuple(sorted(amounts))
    total = sum(amounts.values())
    return CompositionGraph(np.array([index[s] for s in symbols], dtype=np.int64),
                            np.array([amounts[s] / total for s in symbols], dtype=np.float32), symbols)


@dataclass
class CompositionBatch:
    """Many compositions as one disjoint graph (node arrays + edge lists + node → crystal index)."""

    elements: torch.Tensor  # (n_nodes,) rows into the embedding matrix
    fractions: torch.Tensor  # (n_nodes,)
    self_idx: torch.Tensor  # (n_edges,) receiving node
    nbr_idx: torch.Tensor  # (n_edges,) sending node
    crystal_idx: torch.Tensor  # (n_nodes,) which composition a node belongs to
    n: int

    @classmethod
    def collate(cls, graphs: list[CompositionGraph]) -> "CompositionBatch":
        elements, fractions, self_idx, nbr_idx, crystal = [], [], [], [], []
        offset = 0
        for i, g in enumerate(graphs):
            k = len(g.elements)
            local = np.arange(k) + offset
            self_idx.append(np.repeat(local, k))
            nbr_idx.append(np.tile(local, k))
            elements.append(g.elements)
            fractions.append(g.fractions)
            crystal.append(np.full(k, i, dtype=np.int64))
            offset += k
        cat = lambda xs, dt: torch.from_numpy(np.concatenate(xs).astype(dt)) if xs else torch.zeros(0, dtype=getattr(torch, dt))  # noqa: E731
        return cls(cat(elements, "int64"), cat(fractions, "float32"), cat(self_idx, "int64"),
                   cat(nbr_idx, "int64"), cat(crystal, "int64"), len(graphs))
