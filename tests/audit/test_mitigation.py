"""Mitigation removes a planted descriptor bias; the audit re-run shows it."""

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from cosynth.audit.audit import AuditSettings, audit
from cosynth.audit.mitigation import element_volumes, importance_weights, matched_sample, normalize_volumes
from cosynth.audit.stats import standardised_mean_difference


def biased(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.7).astype(int)
    x = np.where(y == 1, rng.normal(3, 1, n), rng.normal(5, 1.5, n))
    return x, y


def _weighted_mean(x, w):
    return float((x * w).sum() / w.sum())


def test_importance_weights_equalise_class_means():
    x, y = biased()
    w = importance_weights(x, y, bins=20)
    assert np.isclose(w[y == 1].mean(), 1) and np.isclose(w[y == 0].mean(), 1)
    before = x[y == 1].mean() - x[y == 0].mean()
    after = _weighted_mean(x[y == 1], w[y == 1]) - _weighted_mean(x[y == 0], w[y == 0])
    assert abs(before) > 1.5 and abs(after) < 0.12 * abs(before)  # within-bin differences remain


def test_matched_sample_removes_the_shortcut_and_keeps_the_ratio():
    x, y = biased()
    before = audit(pd.DataFrame({"x": x, "label": y}), AuditSettings(label="label"), ["x"])
    keep = matched_sample(x, y, bins=20, seed=1)
    after = audit(pd.DataFrame({"x": x[keep], "label": y[keep]}), AuditSettings(label="label"), ["x"])
    assert before["descriptors"]["x"]["verdict"] == "bias"
    assert after["descriptors"]["x"]["verdict"] == "ok"
    assert abs(standardised_mean_difference(x[keep][y[keep] == 1], x[keep][y[keep] == 0])) < 0.1
    assert y[keep].mean() == pytest.approx(y.mean(), abs=0.05)
    assert np.array_equal(keep, matched_sample(x, y, bins=20, seed=1))
    assert not np.array_equal(keep, matched_sample(x, y, bins=20, seed=2))
    with pytest.raises(ValueError, match="both classes"):
        matched_sample(x, np.ones_like(y))


def test_element_volume_fit_recovers_known_volumes():
    # cells built with exactly 10 Å³ per Na and 25 Å³ per Cl
    structures = []
    for n_na, n_cl in ((1, 1), (2, 1), (1, 2), (1, 3)):
        n = n_na + n_cl
        v = 10 * n_na + 25 * n_cl
        coords = [[i / n, 0, 0] for i in range(n)]
        structures.append(Structure(Lattice.cubic(v ** (1 / 3)), ["Na"] * n_na + ["Cl"] * n_cl, coords))
    fit = element_volumes(structures)
    assert fit["Na"] == pytest.approx(10) and fit["Cl"] == pytest.approx(25)


def test_normalize_volumes_uses_same_formula_then_elements_then_leaves_alone():
    def cell(el, a):
        return Structure(Lattice.cubic(a), el, [[0, 0, 0], [0.5, 0.5, 0.5]])

    known = cell(["Cs", "Cl"], 4.1)
    s = [known, cell(["Cs", "Cl"], 3.0), cell(["Cs", "Br"], 3.0), cell(["Xe", "Kr"], 3.0)]
    formulas = ["CsCl", "CsCl", "CsBr", "XeKr"]
    fixed, log = normalize_volumes(s, formulas, [False, True, True, True], [True, False, False, False])
    assert fixed[1].volume == pytest.approx(known.volume)
    assert log.loc[0, "target"] == "a known structure of the formula"
    # CsBr: no known CsBr; Cs and Br volumes... Br is not in the reference, so no fit either
    assert log.loc[1, "target"] == "none found" and fixed[2].volume == pytest.approx(27.0)
    assert log.loc[2, "target"] == "none found"
    assert s[1].volume == pytest.approx(27.0)  # inputs are not modified


def test_mitigate_cli_then_audit_on_real_data(shared_path, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_audit import _mp_tables

    from cosynth.audit.audit import audit_table
    from cosynth.cli import app

    _, mixed = _mp_tables(shared_path, factor=0.6)
    src = tmp_path / "mixed.parquet"
    mixed.write(src)
    out = tmp_path / "fixed.parquet"
    res = CliRunner().invoke(app, ["mitigate", str(src), "-l", "label", "--method", "normalize-volume",
                                   "--fix", "source=generated", "-o", str(out)])
    assert res.exit_code == 0, res.output
    names = ["density", "density_vs_formula"]
    before = audit_table(src, "label", descriptors=names, cache_dir=tmp_path / "c")
    after = audit_table(out, "label", descriptors=names, cache_dir=tmp_path / "c")
    assert "density_vs_formula" in before["verdict"]["flagged"]
    assert after["verdict"]["flagged"] == [] and after["descriptors"]["density_vs_formula"]["shortcut"]["auc"] < 0.65
    res = CliRunner().invoke(app, ["mitigate", str(src), "-l", "label", "--method", "reweight", "-o",
                                   str(tmp_path / "w.parquet")])
    assert res.exit_code == 0 and "effective_sample_size" in res.output
    assert "weight" in pd.read_parquet(tmp_path / "w.parquet").columns
    res = CliRunner().invoke(app, ["mitigate", str(src), "-l", "label", "--method", "nope", "-o", str(out)])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output
