"""CSPD-like generator: substitution, volume rules, distance rejection, dedupe, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase.data import covalent_radii

from cosynth.data.generate import GeneratorConfig, generate_negatives, short_contact, substitute


def _packing(s) -> float:
    return float(np.sum(4 / 3 * np.pi * covalent_radii[[site.specie.Z for site in s]] ** 3) / s.volume)


def test_substitution_maps_cation_to_cation_and_keeps_sites(crystals):
    proto = crystals.rocksalt("Na", "Cl", 5.64)
    new, mapping = substitute(proto, "OMg")  # formula order must not matter
    assert mapping == {"Na": "Mg", "Cl": "O"}
    assert new.composition.reduced_formula == "MgO"
    assert np.allclose(new.frac_coords, proto.frac_coords) and new.volume == pytest.approx(proto.volume)
    with pytest.raises(ValueError, match="stoichiometry"):
        substitute(proto, "TiO2")


def test_volume_rules(ab_pool):
    cov = generate_negatives(["SiC"], ab_pool, dedupe=False, min_distance_factor=0.0)
    assert len(cov) == len(ab_pool)  # every AB prototype, none excluded
    for s in cov.structures():
        assert _packing(s) == pytest.approx(0.7405, rel=1e-4)  # covalent spheres close-packed
    ref = generate_negatives(["SiC"], ab_pool, volume="reference", reference_volumes={"SiC": 10.5},
                             dedupe=False, min_distance_factor=0.0)
    assert [s.volume / len(s) for s in ref.structures()] == pytest.approx([10.5] * len(ref), rel=1e-5)
    same = generate_negatives(["SiC"], ab_pool, volume="unchanged", dedupe=False, min_distance_factor=0.0)
    assert same.frame["volume_factor"].tolist() == pytest.approx([1.0] * len(same))
    missing = generate_negatives(["SiC"], ab_pool, volume="reference", reference_volumes={})
    assert len(missing) == 0 and "no reference volume" in missing.errors["error"].iloc[0]


def test_provenance_columns_and_target_formula_never_a_prototype(ab_pool):
    table = generate_negatives(["MgO"], ab_pool, dedupe=False, min_distance_factor=0.0)
    frame = table.frame
    assert "p-mgo" not in set(frame["prototype_id"])  # MgO's own structure would reproduce MP's volume
    row = frame[frame["prototype_id"] == "p-nacl"].iloc[0]
    assert row["id"] == "gen:MgO:p-nacl" and row["prototype_formula"] == "NaCl"
    assert row["substitution"] == "Na->Mg,Cl->O" and row["scaling"] == "covalent" and row["label"] == 0
    assert row["source"] == "generated" and row["volume_factor"] > 0


def test_short_contacts_are_rejected_with_the_pair(crystals):
    nacl = crystals.rocksalt("Na", "Cl", 5.64)
    assert short_contact(nacl, 0.7, 0.6766) is None
    # a = 3.5 Å: Na–Cl 1.75 Å < 0.7 × (1.66 + 1.02) Å, while Na–Na 2.47 Å is still allowed
    squeezed = crystals.rocksalt("Na", "Cl", 3.5)
    reason = short_contact(squeezed, 0.7, 0.6766)
    assert reason is not None and "(Na) and" in reason and "(Cl) are 1.75 Å apart" in reason
    s = crystals.cscl("Cs", "Cl", 3.0)  # Cs–Cs 3.0 Å < 0.7 × 2 × 2.44 Å: an atom and its own image
    assert "atom 0 (Cs) and its own periodic image" in short_contact(s, 0.7, 0.6766)
    # a generator run with a strict threshold rejects those candidates and says why
    table = generate_negatives(["NaCl"], [("p-cscl", s)], min_distance_factor=1.5)
    assert len(table) == 0
    assert table.errors["error"].iloc[0].startswith("short contact: atom")


def test_duplicates_and_known_structures_are_dropped(ab_pool, crystals):
    # NaCl and KBr rock salts give the same SiC candidate; MgO is excluded as the target itself
    table = generate_negatives(["SiC"], ab_pool, min_distance_factor=0.0)
    ids = set(table.frame["id"])
    assert len({"gen:SiC:p-nacl", "gen:SiC:p-kbr"} & ids) == 1
    assert len({"gen:SiC:p-nacl", "gen:SiC:p-kbr", "gen:SiC:p-mgo"} & ids) == 1
    assert table.errors["error"].str.startswith("duplicate of gen:SiC:").sum() == 2
    # a candidate matching a known experimental structure of the formula is a positive, not a negative
    known = {"SiC": [("mp-8062", crystals.zincblende("Si", "C", 4.36))]}
    with_known = generate_negatives(["SiC"], ab_pool, known=known, min_distance_factor=0.0)
    assert "gen:SiC:p-zns" not in set(with_known.frame["id"])
    assert (with_known.errors["error"] == "matches known experimental structure mp-8062").sum() == 1


def test_deterministic_given_seed(ab_pool):
    kw = dict(max_prototypes=3, min_distance_factor=0.0, dedupe=False)
    a = generate_negatives(["SiC", "GaAs"], ab_pool, seed=1, **kw).frame
    b = generate_negatives(["SiC", "GaAs"], ab_pool, seed=1, **kw).frame
    pd.testing.assert_frame_equal(a, b)
    other = [generate_negatives(["SiC", "GaAs"], ab_pool, seed=s, **kw).frame["id"].tolist() for s in range(2, 6)]
    assert any(ids != a["id"].tolist() for ids in other)
    # a formula's candidates do not depend on the other formulas asked for
    alone = generate_negatives(["GaAs"], ab_pool, seed=1, **kw).frame
    pd.testing.assert_frame_equal(alone.reset_index(drop=True),
                                  a[a["formula"] == "GaAs"].reset_index(drop=True))


def test_bad_targets_are_reported_not_raised(ab_pool):
    table = generate_negatives(["Qq2", "TiO2"], ab_pool)
    assert len(table) == 0
    messages = table.errors["error"].tolist()
    assert any("Qq" in m for m in messages)
    assert any("no prototype with anonymous formula AB2" in m for m in messages)
    with pytest.raises(ValueError, match="volume must be one of"):
        GeneratorConfig(volume="tiny")
