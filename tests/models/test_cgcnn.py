import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny-crystal helpers next to this file
import pytest
import torch
from _bimodal_fixtures import one_thread, rocksalt, rocksalt_graph, rows  # noqa: F401

from cosynth.models.bimodal_data import BimodalDataset
from cosynth.models.cgcnn.model import CGCNN
from cosynth.represent.graph import GraphBatch, crystal_graph


class _Batch:
    def __init__(self, graphs):
        self.graphs, self.n = graphs, graphs.n


def test_supercell_gives_the_same_prediction():
    torch.manual_seed(0)
    model = CGCNN(d=16).eval()
    s = rocksalt("Na", "Cl", 5.64)
    big = s.copy()
    big.make_supercell([2, 1, 1])
    with torch.no_grad():
        a = model(_Batch(GraphBatch.collate([crystal_graph(s)])))
        b = model(_Batch(GraphBatch.collate([crystal_graph(big)])))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_structure_matters():
    torch.manual_seed(0)
    model = CGCNN(d=16).eval()
    with torch.no_grad():
        a = model(_Batch(GraphBatch.collate([rocksalt_graph("Na", "Cl", 5.64)])))
        b = model(_Batch(GraphBatch.collate([rocksalt_graph("Na", "Cl", 6.20)])))
    assert not torch.allclose(a, b)


def test_rows_without_structure_are_refused():
    model = CGCNN(d=16)
    with pytest.raises(ValueError, match="structure"):
        model(BimodalDataset(rows(), 1.0).collate(list(range(6))))


def test_fits_a_tiny_set():
    torch.manual_seed(0)
    model = CGCNN(d=16)
    batch = BimodalDataset(rows(present=(1,) * 6), 1.0).collate(list(range(6)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(batch), batch.target)
        first = first if first is not None else loss.item()
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < 0.1 * first
