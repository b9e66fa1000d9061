"""The stacked classifier: its forests are sklearn's, and it round-trips through one model file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _forests(rng):
    """A classifier on two own descriptors and one log-ratio, and the regressor that expects that
    descriptor's log from the composition; with the data they were fitted on."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from cosynth.audit.baselines import descriptor_trees
    from cosynth.models.stack import composition_features, tree_features

    n = 400
    formulas = rng.choice(["NaCl", "KCl", "MgO", "Si", "TiO2", "Fe2O3"], n)
    described = pd.DataFrame({"density": rng.uniform(1, 8, n), "n_sites": rng.integers(1, 40, n).astype(float),
                              "volume_per_atom": rng.uniform(8, 30, n), "mean_atomic_mass": rng.uniform(10, 60, n),
                              "n_elements": rng.integers(1, 4, n).astype(float),
                              "mean_covalent_radius": rng.uniform(0.6, 1.6, n)})
    described.loc[rng.random(n) < 0.05, "density"] = np.nan  # missing descriptors follow sklearn's learnt side
    elements = ["Cl", "Fe", "K", "Mg", "Na", "O", "Si", "Ti"]
    composition = composition_features(described, formulas, elements)
    target = np.log(described["volume_per_atom"].to_numpy())
    regressor = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(composition, target)
    expected = {"volume_per_atom": regressor.predict(composition)}
    X = tree_features(described, ["density", "n_sites"], expected)
    y = (np.nan_to_num(X[:, 0]) + 2 * X[:, 2] + rng.normal(0, 0.5, n) > 4).astype(int)
    return described, formulas, elements, regressor, descriptor_trees(X, y, seed=0), X


def test_stored_forests_give_sklearns_outputs_and_round_trip(tmp_path):
    from cosynth.models.registry import load_model, save_model
    from cosynth.models.stack import CLASSIFIER, EXPECTED_PREFIX, TREES, Stack, forest_from_sklearn, join_forests

    described, formulas, elements, regressor, classifier, X = _forests(np.random.default_rng(0))
    forests, arrays = join_forests({CLASSIFIER: forest_from_sklearn(classifier),
                                    EXPECTED_PREFIX + "volume_per_atom": forest_from_sklearn(regressor)})
    stack = Stack(members=[], inputs=[TREES], weights=[2.0], bias=-1.0, descriptors=["density", "n_sites"],
                  expected=["volume_per_atom"], elements=elements, n_nodes=len(arrays["feature"]), forests=forests)
    stack.set_trees(arrays)
    from cosynth.models.stack import composition_features

    composition = composition_features(described, formulas, elements)
    np.testing.assert_allclose(stack.forest_raw(EXPECTED_PREFIX + "volume_per_atom", composition),
                               regressor.predict(composition), rtol=0, atol=1e-12)
    p = stack.tree_probability(described, formulas)
    np.testing.assert_allclose(p, classifier.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    path = save_model(stack, tmp_path / "stack.pt", {"task": "classification", "inputs": "structure"})
    loaded = load_model(path)
    assert loaded.family == "stack" and loaded.inputs == "structure"
    np.testing.assert_allclose(loaded.network.tree_probability(described[:5], formulas[:5]), p[:5], rtol=0, atol=0)
    np.testing.assert_allclose(loaded.network.logit({}, p[:5]), -1.0 + 2.0 * p[:5])
    with pytest.raises(KeyError, match="no forest 'expected:density'"):
        stack.forest_raw(EXPECTED_PREFIX + "density", composition)
    with pytest.raises(ValueError, match="2 weights for 1 inputs"):
        Stack(members=[], inputs=[TREES], weights=[1.0, 2.0], bias=0.0)


def test_element_fractions_count_known_elements_and_leave_bad_formulas_unknown():
    from cosynth.represent.descriptors import element_fractions

    got = element_fractions(["Fe2O3", "NaCl", "not a formula", None], ["O", "Fe", "Na"])
    np.testing.assert_allclose(got[:2], [[0.6, 0.4, 0.0], [0.0, 0.0, 0.5]])  # Cl is outside the list
    assert np.isnan(got[2:]).all()


def test_a_stack_with_a_hull_reads_each_crystals_energy_above_it(tmp_path):
    from pymatgen.core import Lattice, Structure

    from cosynth.models.registry import load_model, save_model
    from cosynth.models.stack import TREES, Stack
    from cosynth.represent.energy import ABOVE_HULL, structure_energies

    gold = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Au"], [[0, 0, 0]])
    diamond = Structure.from_spacegroup("Fd-3m", Lattice.cubic(6.0), ["Au"], [[0, 0, 0]])
    reference = float(structure_energies([gold], use_cache=False)["energy_per_atom"].iloc[0])
    stack = Stack(members=[], inputs=[TREES], weights=[1.0], bias=0.0, hull={"Au": reference})
    described = pd.DataFrame({"density": [19.3, 9.6]})
    above = stack.with_energy(described, ["Au", "Au"], [gold, diamond])[ABOVE_HULL].to_numpy()
    assert above[0] == pytest.approx(0.0, abs=1e-6) and above[1] > 0.3
    loaded = load_model(save_model(stack, tmp_path / "stack.pt", {"task": "classification", "inputs": "structure"}))
    assert loaded.network.config["hull"] == {"Au": reference}
    plain = Stack(members=[], inputs=[TREES], weights=[1.0], bias=0.0)
    assert plain.with_energy(described, ["Au", "Au"], [gold, diamond]) is described  # no hull: nothing to add
