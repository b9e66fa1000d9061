"""Rotational-ensemble helper: overlapped imaging gives the sequential loop's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosynth.io import read_crystals
from cosynth.models.voxel_cnn.ensemble import crystal_images, image_probabilities, iter_probabilities
from cosynth.models.voxel_cnn.model import VoxelCNN
from cosynth.represent.voxel import CrystalImager, crystal_rng, sample_rotations


@pytest.fixture(scope="module")
def records(xiespp_cifs):
    recs = read_crystals([p for p in xiespp_cifs if p.stem.startswith("MoS2")][:3])
    broken = read_crystals([xiespp_cifs[0].parent / "no-such-file.cif"])
    return [recs[0], broken[0], *recs[1:]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VoxelCNN(filters=8).eval()


@pytest.mark.parametrize("sampler", ["haar", "xiespp"])
def test_overlapped_probabilities_equal_the_sequential_loop(records, model, sampler):
    kw = dict(ensemble=5, seed=3, sampler=sampler)
    overlapped = list(iter_probabilities(records, model, prefetch=2, **kw))
    sequential = list(iter_probabilities(records, model, prefetch=0, **kw))
    assert [r[0] for r in overlapped] == [r.id for r in records]
    for (i1, a1, p1, e1), (i2, a2, p2, e2), rec in zip(overlapped, sequential, records, strict=False):
        assert i1 == i2 == rec.id and (e1 is None) == rec.ok and e1 == e2
        if rec.ok:
            np.testing.assert_array_equal(a1, sample_rotations(sampler, 5, crystal_rng(3, rec.id)))
            np.testing.assert_array_equal(a1, a2)
            np.testing.assert_array_equal(p1, p2)
            imager = CrystalImager.from_record(rec, sampler)
            manual = image_probabilities(model, [imager.image(a, sampler) for a in a1])
            np.testing.assert_array_equal(p1, manual)
            assert p1.shape == (5,) and np.all((p1 > 0) & (p1 < 1))


def test_explicit_rotations_and_errors(records, model):
    rot = np.array([[0.0, 0.0, 0.0], [30.0, 45.0, 60.0]])
    item = crystal_images(records[0], rotations=rot, sampler="xiespp")
    assert item.error is None and len(item.images) == 2
    np.testing.assert_array_equal(item.angles, rot)
    bad = crystal_images(records[1])
    assert bad.images is None and bad.error


def test_consumer_may_stop_early(records, model):
    stream = iter_probabilities(records * 3, model, ensemble=2, prefetch=1)
    first = next(stream)
    assert first[0] == records[0].id
    stream.close()  # the producer thread is released, nothing hangs
