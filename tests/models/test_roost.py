import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny-crystal helpers next to this file
import torch
from _bimodal_fixtures import one_thread, rows  # noqa: F401

from cosynth.models.bimodal_data import BimodalDataset
from cosynth.models.roost.model import Roost
from cosynth.represent.composition import CompositionBatch, composition_graph


class _Batch:
    def __init__(self, comp):
        self.comp, self.n = comp, comp.n


def test_invariant_to_element_order_within_a_batch():
    torch.manual_seed(0)
    model = Roost(d=16, hidden=32).eval()
    b = CompositionBatch.collate([composition_graph(f) for f in ("SrTiO3", "Li7La3Zr2O12", "Fe")])
    perm = torch.randperm(len(b.elements))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    shuffled = CompositionBatch(b.elements[perm], b.fractions[perm], inv[b.self_idx], inv[b.nbr_idx],
                                b.crystal_idx[perm], b.n)
    with torch.no_grad():
        torch.testing.assert_close(model(_Batch(b)), model(_Batch(shuffled)), rtol=1e-5, atol=1e-6)


def test_prediction_of_a_row_does_not_depend_on_its_batch_in_eval_mode():
    torch.manual_seed(0)
    model = Roost(d=16, hidden=32).eval()
    ds = BimodalDataset(rows(), 1.0)
    with torch.no_grad():
        full = model(ds.collate(list(range(6))))
        alone = model(ds.collate([3]))
    torch.testing.assert_close(full[3], alone[0])


def test_fits_a_tiny_set():
    torch.manual_seed(0)
    model = Roost(d=16, hidden=32)
    batch = BimodalDataset(rows(), 1.0).collate(list(range(5)))  # row 5 repeats NaCl with another target
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(batch), batch.target)
        first = first if first is not None else loss.item()
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < 0.1 * first


def test_nonnegative_output_option():
    torch.manual_seed(0)
    model = Roost(d=16, hidden=32, nonneg=True).eval()
    with torch.no_grad():
        assert (model(BimodalDataset(rows(), 1.0).collate(list(range(6)))) >= 0).all()
