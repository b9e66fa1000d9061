"""The stacked classifier: its trees are sklearn's, and it round-trips through one model file."""

from __future__ import annotations

import numpy as np
import pytest


def test_stored_trees_give_sklearns_probabilities_missing_values_included(tmp_path):
    from cosynth.audit.baselines import descriptor_trees
    from cosynth.models.registry import load_model, save_model
    from cosynth.models.stack import TREES, Stack, trees_from_sklearn

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(0, 0.5, 400) > 0.3).astype(int)
    X[rng.random(X.shape) < 0.05] = np.nan  # missing descriptors follow sklearn's learnt side
    fitted = descriptor_trees(X, y, seed=0)
    trees = trees_from_sklearn(fitted)
    stack = Stack(members=[], inputs=[TREES], weights=[2.0], bias=-1.0, descriptors=["a", "b", "c", "d"],
                  n_nodes=trees["n_nodes"], n_trees=trees["n_trees"], tree_baseline=trees["tree_baseline"])
    stack.set_trees(trees["arrays"])
    np.testing.assert_allclose(stack.tree_probability(X), fitted.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    path = save_model(stack, tmp_path / "stack.pt", {"task": "classification", "inputs": "structure"})
    loaded = load_model(path)
    assert loaded.family == "stack" and loaded.inputs == "structure"
    p = loaded.network.tree_probability(X[:5])
    np.testing.assert_allclose(loaded.network.logit({}, p), -1.0 + 2.0 * p)
    with pytest.raises(ValueError, match="2 weights for 1 inputs"):
        Stack(members=[], inputs=[TREES], weights=[1.0, 2.0], bias=0.0)
