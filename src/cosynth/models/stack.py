"""A stacked classifier: graph networks and descriptor trees weighed by one logistic layer.

Why: each member sees what another misses. COSNet ranks compositions well; trees on the
crystal's own descriptors (density, packing, symmetry) tell polymorphs apart better. A logistic
layer fitted on validation scores weighs them. It is still one model file (the members' weights,
the trees as plain arrays, the layer's weights), so it loads and predicts like every family.

Every input of the layer comes from the one crystal alone, so a crystal's score never depends on
which others are predicted with it. A row with a formula only gets the composition-capable member
alone, with that member's own calibration.
"""

from __future__ import annotations

import numpy as np
import torch

from cosynth.models.layers import ConfiguredModule

TREES = "descriptor_trees"  # the name of the trees among the layer's inputs


def likelihood_logit(p) -> np.ndarray:
    """The logit of likelihoods, as the layer takes a member's output (clipped away from 0 and 1)."""
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def trees_from_sklearn(model) -> dict:
    """The fitted trees of a binary ``HistGradientBoostingClassifier`` (numeric features only) as
    flat node arrays: the constructor arguments of :class:`Stack` that hold them."""
    nodes = [predictor[0].nodes for predictor in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("categorical splits cannot be stored in a stack")
    offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]])
    flat = np.concatenate(nodes)
    return {"n_nodes": int(len(flat)), "n_trees": len(nodes),
            "tree_baseline": float(np.ravel(model._baseline_prediction)[0]),
            "arrays": {"feature": flat["feature_idx"].astype(np.int64),
                       "threshold": flat["num_threshold"].astype(np.float64),
                       "left": np.concatenate([n["left"].astype(np.int64) + o for n, o in zip(nodes, offsets)]),
                       "right": np.concatenate([n["right"].astype(np.int64) + o for n, o in zip(nodes, offsets)]),
                       "leaf": flat["is_leaf"].astype(bool), "missing_left": flat["missing_go_to_left"].astype(bool),
                       "value": flat["value"].astype(np.float64), "roots": offsets.astype(np.int64)}}


class Stack(ConfiguredModule):
    """Member networks, optional descriptor trees, and the logistic layer over their logits.

    Args:
        members: ``{"name", "family", "config", "target_scale"}`` of each member network.
        inputs: the layer's inputs in the order of ``weights``: member names and :data:`TREES`.
        weights, bias: the logistic layer (on member logits and the trees' probability).
        descriptors: the trees' features, in order (names of
            :func:`cosynth.represent.descriptors.compute_descriptors`).
        n_nodes, n_trees, tree_baseline: the trees' size and raw starting score (0 nodes: no trees).
        composition_member: the member that scores formula-only rows (None: such rows are errors).
        composition_calibration: that member's Platt ``{"a", "b"}``.
    """

    def __init__(self, members: list, inputs: list, weights: list, bias: float, descriptors: list = (),
                 n_nodes: int = 0, n_trees: int = 0, tree_baseline: float = 0.0,
                 composition_member: str | None = None, composition_calibration: dict | None = None):
        from cosynth.models.registry import model_class

        super().__init__()
        if len(weights) != len(inputs):
            raise ValueError(f"{len(weights)} weights for {len(inputs)} inputs")
        self.config = dict(members=[dict(m) for m in members], inputs=list(inputs), weights=[float(w) for w in weights],
                           bias=float(bias), descriptors=list(descriptors), n_nodes=int(n_nodes), n_trees=int(n_trees),
                           tree_baseline=float(tree_baseline), composition_member=composition_member,
                           composition_calibration=composition_calibration)
        self.members = torch.nn.ModuleDict({m["name"]: model_class(m["family"]).from_config(dict(m["config"]))
                                            for m in members})
        for name, dtype in (("feature", torch.int64), ("threshold", torch.float64), ("left", torch.int64),
                            ("right", torch.int64), ("leaf", torch.bool), ("missing_left", torch.bool),
                            ("value", torch.float64)):
            self.register_buffer(f"tree_{name}", torch.zeros(n_nodes, dtype=dtype))
        self.register_buffer("tree_roots", torch.zeros(n_trees, dtype=torch.int64))

    def set_trees(self, arrays: dict) -> "Stack":
        """Fill the tree buffers from :func:`trees_from_sklearn`'s ``arrays``."""
        for name, values in arrays.items():
            buffer = getattr(self, f"tree_{name}")
            buffer.copy_(torch.as_tensor(values, dtype=buffer.dtype))
        return self

    def member(self, name: str):
        """One member as a :class:`cosynth.models.registry.LoadedModel` (uncalibrated, as the layer saw it)."""
        from cosynth.models.registry import FAMILIES, LoadedModel

        spec = next(m for m in self.config["members"] if m["name"] == name)
        return LoadedModel(self.members[name].eval(), {
            "family": spec["family"], "config": spec["config"], "inputs": FAMILIES[spec["family"]][2],
            "task": "classification", "target_scale": spec.get("target_scale", 1.0), "path": f"<stack member {name}>"})

    def tree_probability(self, features: np.ndarray) -> np.ndarray:
        """The trees' positive-class probability for rows of descriptor values (NaN = missing)."""
        x = np.asarray(features, dtype=np.float64)
        feature, threshold = self.tree_feature.numpy(), self.tree_threshold.numpy()
        left, right, leaf = self.tree_left.numpy(), self.tree_right.numpy(), self.tree_leaf.numpy()
        missing_left = self.tree_missing_left.numpy()
        node = np.tile(self.tree_roots.numpy(), (len(x), 1))  # (rows, trees): each row walks every tree
        rows = np.arange(len(x))[:, None]
        while not leaf[node].all():
            value = x[rows, feature[node]]
            go_left = np.where(np.isnan(value), missing_left[node], value <= threshold[node])
            node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
        raw = self.config["tree_baseline"] + self.tree_value.numpy()[node].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))

    def logit(self, member_logits: dict, tree_probability: np.ndarray | None = None) -> np.ndarray:
        """The layer's output (a logit) from each member's logits and the trees' probability."""
        columns = [tree_probability if name == TREES else member_logits[name] for name in self.config["inputs"]]
        return self.config["bias"] + np.column_stack(columns) @ np.asarray(self.config["weights"])
