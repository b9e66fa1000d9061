"""The audit's verdicts on synthetic tables with a planted bias, and on real shared data."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.audit.audit import AuditSettings, add_formula_relative, audit, audit_table, verdict_table


def planted(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return pd.DataFrame({
        "label": y,
        "biased": np.where(y == 1, rng.normal(2, 0.3, n), rng.normal(4, 0.6, n)),   # separates classes
        "medium": rng.normal(0, 1, n) + 0.7 * y,                                    # medium effect only
        "noise": rng.normal(size=n),
        "source": np.where(rng.random(n) < 0.5, "A", "B"),
    })


def test_planted_bias_is_flagged_noise_is_not():
    r = audit(planted(), AuditSettings(label="label"), ["biased", "medium", "noise"])
    d = r["descriptors"]
    assert d["biased"]["verdict"] == "bias" and d["biased"]["shortcut"]["auc"] > 0.95
    assert d["medium"]["verdict"] == "warn"
    assert d["noise"]["verdict"] == "ok"
    assert r["verdict"]["flagged"] == ["biased"] and r["verdict"]["biased"]
    assert set(verdict_table(r)["descriptor"]) == {"biased", "medium", "noise"}


def test_source_confound_detected_only_when_label_depends_on_source():
    df = planted()
    r = audit(df, AuditSettings(label="label", source="source"), ["noise"])
    assert not r["source_confound"]["flag"]
    rng = np.random.default_rng(1)
    df["label"] = np.where(df["source"] == "A", rng.random(len(df)) < 0.9, rng.random(len(df)) < 0.2).astype(int)
    r = audit(df, AuditSettings(label="label", source="source"), ["noise"])
    sc = r["source_confound"]
    assert sc["flag"] and sc["shortcut"]["auc"] > 0.8 and sc["chi2_pvalue"] < 1e-10
    assert r["sources"]["A"]["positive_rate"] > 0.8 > 0.3 > r["sources"]["B"]["positive_rate"]
    assert set(r["descriptors"]["noise"]["classes_within_source"]) == {"A", "B"}


def test_unlabelled_rows_dropped_and_bad_requests_explained():
    df = planted(100)
    df.loc[:9, "label"] = np.nan
    r = audit(df, AuditSettings(label="label"), ["noise"])
    assert r["rows"]["unlabelled_dropped"] == 10 and r["rows"]["labelled"] == 90
    with pytest.raises(ValueError, match="no label column 'nope'"):
        audit(df, AuditSettings(label="nope"), ["noise"])
    with pytest.raises(ValueError, match="not in the table: zzz"):
        audit(df, AuditSettings(label="label"), ["zzz"])
    with pytest.raises(ValueError, match="single class"):
        audit(df.assign(label=1), AuditSettings(label="label"), ["noise"])


def test_formula_relative_descriptor_exposes_within_formula_bias():
    # negatives are always 30 % denser than their formula's positive, but formulas differ 10x
    rng = np.random.default_rng(2)
    base = rng.uniform(1, 10, 200)
    df = pd.DataFrame({"formula": np.repeat([f"F{i}" for i in range(200)], 2),
                       "density": np.column_stack([base, base * 1.3]).ravel(),
                       "label": np.tile([1, 0], 200)})
    added = add_formula_relative(df)
    assert added == ["density_vs_formula"]
    r = audit(df, AuditSettings(label="label"), ["density", "density_vs_formula"])
    assert r["descriptors"]["density"]["verdict"] != "bias"
    assert r["descriptors"]["density_vs_formula"]["verdict"] == "bias"
    unique = pd.DataFrame({"formula": [f"F{i}" for i in range(50)], "density": np.ones(50)})
    assert add_formula_relative(unique) == []


def _mp_tables(shared_path, factor):
    """Single-source analogue and a 'mixed' version whose negatives are compressed by `factor`."""
    from cosynth.data.builders import build_single_source
    from cosynth.data.table import CrystalTable

    shared_path("data/mp_synth_structures")
    built = build_single_source(shared_path("data"))
    single = built.subset(built.frame["formula"].isin(sorted(built.frame["formula"].unique())[:120]).to_numpy())
    structures = []
    for s, label in zip(single.structures(), single.frame["label"]):
        if label == 0:
            s = s.copy()
            s.scale_lattice(s.volume * factor)
        structures.append(s)
    mixed = CrystalTable.from_structures(structures, ids=single.frame["id"].tolist())
    frame = mixed.frame.copy()
    frame["label"] = single.frame["label"].to_numpy()
    frame["source"] = np.where(frame["label"] == 1, "experimental", "generated")
    return single, mixed.with_frame(frame)


def test_real_data_mixed_flagged_single_not(shared_path, tmp_path):
    single, mixed = _mp_tables(shared_path, factor=0.6)
    names = ["density", "mean_atomic_mass", "density_vs_formula"]
    rs = audit_table(single, "label", source="structure_source", descriptors=names, cache_dir=tmp_path / "c")
    rm = audit_table(mixed, "label", source="source", descriptors=names, cache_dir=tmp_path / "c",
                     out_dir=tmp_path / "mixed")
    assert rs["verdict"]["flagged"] == []
    assert rs["descriptors"]["density"]["shortcut"]["auc"] < 0.65
    assert "density_vs_formula" in rm["verdict"]["flagged"]
    assert rm["descriptors"]["density"]["classes"]["mean_b"] > rm["descriptors"]["density"]["classes"]["mean_a"]
    saved = json.loads((tmp_path / "mixed" / "audit.json").read_text())
    assert saved["verdict"]["flagged"] == rm["verdict"]["flagged"]
    assert (tmp_path / "mixed" / "figures" / "audit_density.png").stat().st_size > 5000
    assert "BIASED" in (tmp_path / "mixed" / "audit.html").read_text()
    plain = audit_table(mixed.frame, "label", source="source", descriptors=["density"], cache_dir=tmp_path / "c")
    assert plain["descriptors"]["density"]["shortcut"] == rm["descriptors"]["density"]["shortcut"]  # a DataFrame works


def test_audit_cli_on_a_composition_only_table(tmp_path):
    from cosynth.cli import app

    rng = np.random.default_rng(3)
    light = ["LiH", "BeO", "NaF", "MgO", "LiF", "BN", "AlN", "SiC", "NaCl", "KF"]
    heavy = ["PbI2", "HgTe", "BiI3", "UO2", "PbTe", "CsI", "WO3", "Au2S", "PtO2", "ThO2"]
    rows = [{"id": f"c{i}", "formula": rng.choice(light if i % 2 else heavy), "label": i % 2} for i in range(120)]
    rows.append({"id": "bad", "formula": "Xx2Qq", "label": 1})
    path = tmp_path / "comp.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    res = CliRunner().invoke(app, ["audit", str(path), "--label", "label", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert "mean_atomic_mass" in saved["verdict"]["flagged"]
    assert "density" not in saved["descriptors"]  # no structures: composition descriptors only
    assert saved["table"]["load_errors"] == 1
    res = CliRunner().invoke(app, ["audit", str(path), "--label", "nope", "-o", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "no label column 'nope'" in res.output


def test_label_must_be_binary_and_the_message_names_the_values():
    df = planted(60)
    three = df.assign(label=np.resize(["icsd", "mp", "oqmd"], len(df)))
    with pytest.raises(ValueError, match=r"must be binary \(two classes\); it holds 3 values: 'icsd', 'mp', 'oqmd'"):
        audit(three, AuditSettings(label="label"), ["noise"])
    two = df.assign(label=np.resize(["icsd", "mp"], len(df)))
    with pytest.raises(ValueError, match=r"holds 'icsd', 'mp' but not the positive value 1"):
        audit(two, AuditSettings(label="label"), ["noise"])
    with pytest.raises(ValueError, match=r"single class \(1\)"):
        audit(df.assign(label=1), AuditSettings(label="label"), ["noise"])
    r = audit(two, AuditSettings(label="label", positive="icsd"), ["noise"])
    assert r["rows"]["positive"] == 30
    text = df.assign(label=df["label"].astype(str))  # a CSV label read as text: '1' is the positive 1
    assert audit(text, AuditSettings(label="label"), ["noise"])["rows"]["positive"] == int((df["label"] == 1).sum())
