import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny-crystal helpers next to this file
import numpy as np
import pytest
import torch
from _bimodal_fixtures import one_thread, rocksalt_graph, rows  # noqa: F401

from cosynth.models.bimodal_data import BimodalDataset, apply_mode, augment, keep_structure_fraction
from cosynth.models.cosnet.model import COSNet

VARIANTS = [dict(scalar_weight=s, concat=c) for s in (True, False) for c in (False, True)]


@pytest.mark.parametrize("kw", VARIANTS)
def test_weights_are_normalised_and_missing_structures_weigh_nothing(kw):
    torch.manual_seed(0)
    model = COSNet(d=16, roost_hidden=32, **kw)
    batch = BimodalDataset(rows(), 1.0).collate(list(range(6)))
    for _mode in (model.train(), model.eval()):
        parts = model.parts(batch)
        torch.testing.assert_close(parts["w_c"] + parts["w_s"], torch.ones_like(parts["w_c"]))
        absent = batch.present == 0
        assert (parts["w_s"][absent] == 0).all() and (parts["w_c"][absent] == 1).all()
        assert (parts["w_s"][~absent] > 0).all()


@pytest.mark.parametrize("kw", VARIANTS)
def test_output_does_not_depend_on_the_placeholder_when_p_s_is_zero(kw):
    torch.manual_seed(0)
    model = COSNet(d=16, roost_hidden=32, **kw).eval()
    r = rows(present=(1,) * 6)
    r.present[:] = False  # structures attached but masked: p_s = 0
    outs = []
    for lat in (4.0, 7.5):  # two different placeholder structures for row 0
        r.graphs[0] = rocksalt_graph("Na", "Cl", lat)
        ds = BimodalDataset(r, 1.0, graphs_when_absent=True)
        with torch.no_grad():
            outs.append(model(ds.collate(list(range(6)))))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    # and p_s = 0 with a structure equals no structure at all
    with torch.no_grad():
        none = model(BimodalDataset(r, 1.0, graphs_when_absent=False).collate(list(range(6))))
    torch.testing.assert_close(outs[0], none, rtol=0, atol=0)


def test_structure_changes_the_output_when_present():
    torch.manual_seed(0)
    model = COSNet(d=16, roost_hidden=32).eval()
    r = rows(present=(1,) * 6)
    outs = []
    for lat in (4.0, 7.5):
        r.graphs[0] = rocksalt_graph("Na", "Cl", lat)
        with torch.no_grad():
            outs.append(model(BimodalDataset(r, 1.0).collate([0, 1, 2])))
    assert not torch.allclose(outs[0][0], outs[1][0])


def test_masked_structures_get_no_gradient():
    torch.manual_seed(0)
    model = COSNet(d=16, roost_hidden=32)
    r = rows(present=(1,) * 6)
    r.present[:] = False
    out = model(BimodalDataset(r, 1.0, graphs_when_absent=True).collate(list(range(6))))
    out.sum().backward()
    grads = [p.grad for p in model.struct_encoder.parameters()]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_augmentation_copies_exactly_single_structure_compositions():
    r = rows(present=(1, 1, 0, 1, 0, 1))  # NaCl twice with structure (rows 0, 5), KBr, LiF once
    aug = augment(r)
    assert len(aug) == len(r) + 2
    copies = np.flatnonzero(aug.augmented)
    assert sorted(aug.ids[i] for i in copies) == ["r1", "r3"]
    assert not aug.present[copies].any()
    assert aug.target[copies].tolist() == [2.0, 4.0]


def test_augmentation_only_on_the_training_split():
    r = rows()
    assert len(apply_mode(r, "bimodal_aug", train=True)) == len(r) + 2
    for train in (False,):
        out = apply_mode(r, "bimodal_aug", train=train)
        assert len(out) == len(r) and not out.augmented.any()
    assert len(apply_mode(r, "bimodal", train=True)) == len(r)
    comp = apply_mode(r, "composition", train=True)
    assert len(comp) == len(r) and not comp.present.any() and comp.has_structure.sum() == 4


def test_structure_fraction_hides_a_seeded_share():
    r = rows(present=(1,) * 6)
    kept = keep_structure_fraction(r, 0.5, seed=3)
    assert kept.present.sum() == 3
    assert keep_structure_fraction(r, 0.5, seed=3).present.tolist() == kept.present.tolist()
    assert keep_structure_fraction(r, 0.0, seed=3).present.sum() == 0
