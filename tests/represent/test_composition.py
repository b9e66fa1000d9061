import numpy as np
import pytest

from cosynth.represent.composition import CompositionBatch, composition_graph, element_embedding


def test_fractions_sum_to_one_and_elements_sorted():
    g = composition_graph("Li2O")
    assert g.symbols == ("Li", "O")
    np.testing.assert_allclose(g.fractions, [2 / 3, 1 / 3], rtol=1e-6)


def test_nan_is_sodium_nitride_and_fractional_formulas_parse():
    assert composition_graph("NaN").symbols == ("N", "Na")
    g = composition_graph("Li3.975 Ge0.975 Sb0.025 S4")
    assert g.symbols == ("Ge", "Li", "S", "Sb")
    assert g.fractions.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["", "Xx2O", "not a formula!"])
def test_bad_formulas_raise_value_error(bad):
    with pytest.raises(ValueError):
        composition_graph(bad)


def test_embeddings_are_selectable():
    index, m200 = element_embedding("matscholar200")
    assert m200.shape[1] == 200 and "Fe" in index
    _, m16 = element_embedding("megnet16")
    assert m16.shape[1] == 16
    # an element a small embedding lacks is reported, not silently zeroed
    index16, _ = element_embedding("megnet16")
    lacking = next(s for s in ("Og", "Ts", "Lv", "Fm", "Es") if s not in index16)
    with pytest.raises(ValueError, match="embedding"):
        composition_graph(f"{lacking}O2", "megnet16")


def test_batch_is_fully_connected_with_self_pairs():
    b = CompositionBatch.collate([composition_graph("Fe"), composition_graph("SrTiO3")])
    assert b.n == 2 and len(b.elements) == 4
    assert len(b.self_idx) == 1 + 9  # n² ordered pairs per composition
    assert set(zip(b.self_idx.tolist(), b.nbr_idx.tolist())) >= {(0, 0), (1, 3), (3, 1)}
    assert b.crystal_idx.tolist() == [0, 1, 1, 1]
    # no edge joins two compositions
    assert all(b.crystal_idx[i] == b.crystal_idx[j] for i, j in zip(b.self_idx.tolist(), b.nbr_idx.tolist()))
