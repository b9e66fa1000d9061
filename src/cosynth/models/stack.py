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

from functools import partial

import numpy as np
import torch

from cosynth.models.layers import ConfiguredModule

TREES = "descriptor_trees"  # the name of the trees among the layer's inputs


def likelihood_logit(p) -> np.ndarray:
    """The logit of likelihoods, as the layer takes a member's output (clipped away from 0 and 1)."""
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


CLASSIFIER = "classifier"  # the forest whose probability the layer takes
EXPECTED_PREFIX = "expected:"  # + a descriptor: the forest that expects its log from the composition


def forest_from_sklearn(model) -> dict:
    """The fitted trees of a ``HistGradientBoostingClassifier`` (binary) or ``...Regressor`` (numeric
    features only) as flat node arrays; child indices and roots count from the forest's first node."""
    nodes = [predictor[0].nodes for predictor in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("categorical splits cannot be stored in a stack")
    offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]]).astype(np.int64)
    flat = np.concatenate(nodes)
    return {"n_trees": len(nodes), "baseline": float(np.ravel(model._baseline_prediction)[0]),
            "arrays": {"feature": flat["feature_idx"].astype(np.int64),
                       "threshold": flat["num_threshold"].astype(np.float64),
                       "left": np.concatenate([n["left"].astype(np.int64) + o for n, o in zip(nodes, offsets)]),
                       "right": np.concatenate([n["right"].astype(np.int64) + o for n, o in zip(nodes, offsets)]),
                       "leaf": flat["is_leaf"].astype(bool), "missing_left": flat["missing_go_to_left"].astype(bool),
                       "value": flat["value"].astype(np.float64), "roots": offsets}}


def join_forests(forests: dict[str, dict]) -> tuple[list[dict], dict]:
    """Several :func:`forest_from_sklearn` forests as one set of node arrays: (the ``forests``
    argument of :class:`Stack`, the arrays for :meth:`Stack.set_trees`)."""
    specs, parts, start = [], [], 0
    for name, forest in forests.items():
        a = dict(forest["arrays"])
        for key in ("left", "right", "roots"):
            a[key] = a[key] + start
        specs.append({"name": name, "n_trees": forest["n_trees"], "baseline": forest["baseline"]})
        parts.append(a)
        start += len(a["feature"])
    arrays = {key: np.concatenate([a[key] for a in parts]) for key in parts[0]} if parts else {}
    return specs, arrays


EXPECTING_COMPOSITION = ("mean_atomic_mass", "n_elements", "mean_covalent_radius")


def composition_features(described, formulas, elements: list[str]) -> np.ndarray:
    """What the expecting forests read: each element's share of the formula, then the composition
    descriptors (:data:`EXPECTING_COMPOSITION`)."""
    from cosynth.represent.descriptors import element_fractions

    return np.column_stack([element_fractions(formulas, elements),
                            described[list(EXPECTING_COMPOSITION)].to_numpy(float)])


def tree_features(described, descriptors: list[str], expected: dict[str, np.ndarray]) -> np.ndarray:
    """The classifier forest's features: the crystal's own descriptors, then for each descriptor of
    ``expected`` its log minus what the composition expects (how much looser or denser, say, this
    crystal is than crystals of its composition usually are)."""
    own = described[list(descriptors)].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = [np.log(described[d].to_numpy(float)) - expected[d] for d in expected]
    return np.column_stack([own, *ratios])


def classifier_features(described, formulas, descriptors: list[str], elements: list[str], expect: dict) -> np.ndarray:
    """:func:`tree_features` of crystals (their descriptors and formulas), where ``expect`` maps each
    expected descriptor to what gives its expected log from :func:`composition_features` (a stored
    forest in a model file, a fitted regressor in the benchmark)."""
    composition = composition_features(described, formulas, elements) if expect else None
    return tree_features(described, descriptors, {d: f(composition) for d, f in expect.items()})


class Stack(ConfiguredModule):
    """Member networks, optional descriptor forests, and the logistic layer over their outputs.

    Args:
        members: ``{"name", "family", "config", "target_scale"}`` of each member network.
        inputs: the layer's inputs in the order of ``weights``: member names and :data:`TREES`.
        weights, bias: the logistic layer (on member logits and the classifier forest's probability).
        descriptors: the classifier's own-descriptor features, in order (names of
            :func:`cosynth.represent.descriptors.compute_descriptors`).
        expected: descriptors whose log, relative to what a forest expects from the composition,
            the classifier also reads (one forest ``expected:<descriptor>`` each).
        elements: the elements of those forests' composition features, in order.
        n_nodes: nodes of all forests together (0: no trees).
        forests: ``{"name", "n_trees", "baseline"}`` of each forest, in the order of the node arrays.
        composition_member: the member that scores formula-only rows (None: such rows are errors).
        composition_calibration: that member's Platt ``{"a", "b"}``.
        hull: ``{reduced formula: lowest energy per atom}`` of the reference crystals, when the
            classifier reads a crystal's energy above their hull
            (:data:`cosynth.represent.energy.ABOVE_HULL`, among ``descriptors``).
    """

    def __init__(self, members: list, inputs: list, weights: list, bias: float, descriptors: list = (),
                 expected: list = (), elements: list = (), n_nodes: int = 0, forests: list = (),
                 composition_member: str | None = None, composition_calibration: dict | None = None,
                 hull: dict | None = None):
        from cosynth.models.registry import model_class

        super().__init__()
        if len(weights) != len(inputs):
            raise ValueError(f"{len(weights)} weights for {len(inputs)} inputs")
        self.config = dict(members=[dict(m) for m in members], inputs=list(inputs), weights=[float(w) for w in weights],
                           bias=float(bias), descriptors=list(descriptors), expected=list(expected),
                           elements=list(elements), n_nodes=int(n_nodes), forests=[dict(f) for f in forests],
                           composition_member=composition_member, composition_calibration=composition_calibration,
                           hull=None if hull is None else {str(f): float(e) for f, e in hull.items()})
        self._hull = None
        self.members = torch.nn.ModuleDict({m["name"]: model_class(m["family"]).from_config(dict(m["config"]))
                                            for m in members})
        for name, dtype in (("feature", torch.int64), ("threshold", torch.float64), ("left", torch.int64),
                            ("right", torch.int64), ("leaf", torch.bool), ("missing_left", torch.bool),
                            ("value", torch.float64)):
            self.register_buffer(f"tree_{name}", torch.zeros(n_nodes, dtype=dtype))
        self.register_buffer("tree_roots", torch.zeros(sum(f["n_trees"] for f in forests), dtype=torch.int64))

    def set_trees(self, arrays: dict) -> "Stack":
        """Fill the tree buffers from :func:`join_forests`'s arrays."""
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

    def forest_raw(self, name: str, features: np.ndarray) -> np.ndarray:
        """One forest's raw output (a logit for the classifier, a value for a regressor) for rows of
        features (NaN = missing)."""
        first = 0
        for spec in self.config["forests"]:
            if spec["name"] == name:
                break
            first += spec["n_trees"]
        else:
            raise KeyError(f"no forest {name!r} in this stack")
        x = np.asarray(features, dtype=np.float64)
        feature, threshold = self.tree_feature.numpy(), self.tree_threshold.numpy()
        left, right, leaf = self.tree_left.numpy(), self.tree_right.numpy(), self.tree_leaf.numpy()
        missing_left = self.tree_missing_left.numpy()
        roots = self.tree_roots.numpy()[first:first + spec["n_trees"]]
        node = np.tile(roots, (len(x), 1))  # (rows, trees): each row walks every tree
        rows = np.arange(len(x))[:, None]
        while not leaf[node].all():
            value = x[rows, feature[node]]
            go_left = np.where(np.isnan(value), missing_left[node], value <= threshold[node])
            node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
        leaf_values = self.tree_value.numpy()[node]
        raw = np.full(len(x), spec["baseline"])
        for tree in range(leaf_values.shape[1]):  # tree by tree, as sklearn adds them: the same rounding
            raw += leaf_values[:, tree]
        return raw

    def tree_probability(self, described, formulas) -> np.ndarray:
        """The classifier forest's positive-class probability from each crystal's descriptors (a table
        of :func:`cosynth.represent.descriptors.compute_descriptors`) and formula."""
        c = self.config
        expect = {d: partial(self.forest_raw, EXPECTED_PREFIX + d) for d in c["expected"]}
        raw = self.forest_raw(CLASSIFIER, classifier_features(described, formulas, c["descriptors"], c["elements"], expect))
        return 1.0 / (1.0 + np.exp(-raw))

    def with_energy(self, described, formulas, structures):
        """``described`` with each structure's energy above the stack's hull, when it reads one."""
        from cosynth.represent.energy import ABOVE_HULL, Hull, above_hull

        if self.config.get("hull") is None:
            return described
        if self._hull is None:
            self._hull = Hull(self.config["hull"])
        return described.assign(**{ABOVE_HULL: above_hull(formulas, structures, self._hull, use_cache=False)})

    def logit(self, member_logits: dict, tree_probability: np.ndarray | None = None) -> np.ndarray:
        """The layer's output (a logit) from each member's logits and the trees' probability."""
        columns = [tree_probability if name == TREES else member_logits[name] for name in self.config["inputs"]]
        return self.config["bias"] + np.column_stack(columns) @ np.asarray(self.config["weights"])
