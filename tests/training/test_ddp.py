"""Training across processes: ``--devices 2 --strategy ddp`` (gloo on CPU) against one process.

The end-to-end tests run the CLI as subprocesses (Lightning's DDP launcher re-runs the command
in a second process) on the same data and seed with ``--devices 1`` and ``--devices 2``.

Tolerances, measured on these tables (2 cores, one torch thread per process):

- voxel CNN (Adam at lr 1e-4, no BatchNorm), 12 crystals with uneven loss weights, batch 5, 1
  epoch: max |Δ weight| = 1.7e-6 (3e-7 at batch 4; 6e-8 unweighted over 3 epochs with both runs
  in subprocesses); asserted ≤ 1e-5, a tenth of one Adam step. Adam's first steps are about
  ±lr whatever the gradient's size, so where a gradient is nearly zero its rounding shows.
- Roost / de-CGCNN / COSNet (Adamax, BatchNorm synced over the processes), 32 rows, 2 epochs at
  lr 1e-3: the validation and test predictions agree to within 3.3e-6 of the target's standard
  deviation (measured: Roost 9e-8, de-CGCNN 3.3e-6, COSNet 1.6e-6); asserted ≤ 1e-4 of it. The
  weights are not compared one by one: a bias or a constant input feature in front of a
  BatchNorm has a gradient that is exactly zero in exact arithmetic, so what the two runs compute
  there is rounding noise of different summation orders, and Adamax turns any nonzero noise into
  a full step of ±lr (weights differ by up to ~1e-3). Those weights cancel in the normalised
  output, and the predictions show it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Element, Lattice, Structure

from cosynth.models.bimodal_data import BimodalDataset
from cosynth.represent.graph import GraphCache
from cosynth.training.bimodal import FitConfig, _train_loader, prepare
from cosynth.training.parallel import ShardedBatches, check_parallel, pad_index, unpad, weighted_mean_loss

VOXEL_WEIGHT_TOLERANCE = 1e-5
BIMODAL_PREDICTION_TOLERANCE = 1e-4  # × the standard deviation of the target

PAIRS = [(a, b) for a in ("Li", "Na", "K", "Rb", "Cs") for b in ("F", "Cl", "Br", "I")] + \
        [(a, b) for a in ("Mg", "Ca", "Sr", "Ba") for b in ("O", "S", "Se")]


def cli(*args: str, cache: Path, devices: int) -> None:
    """``cosynth ARGS --devices N``: a fresh ``python -m cosynth.cli`` process (one torch thread per
    process) for N > 1, as a user runs it; in this process for N = 1 (the same command, cheaper)."""
    args = (*args, "--devices", str(devices), "--strategy", "ddp" if devices > 1 else "auto")
    if devices == 1:
        from typer.testing import CliRunner

        from cosynth.cli import app

        os.environ["COSYNTH_CACHE"] = str(cache)
        try:
            result = CliRunner().invoke(app, list(args))
        finally:
            os.environ.pop("COSYNTH_CACHE")
        assert result.exit_code == 0, result.output[-3000:]
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "COSYNTH_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "cosynth.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def bimodal_table(tmp_path_factory) -> Path:
    """32 rock-salt compounds, every other one with its structure; a fixed train/val/test column."""
    rows = []
    for i, (a, b) in enumerate(PAIRS):
        lat = 2 * (Element(a).atomic_radius + Element(b).atomic_radius)
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        rows.append({"id": f"{a}{b}", "formula": f"{a}{b}", "cif": s.to(fmt="cif") if i % 2 == 0 else None,
                     "target": float(lat) - 6.0})  # centred: no ReLU output, so predictions are not all 0
    df = pd.DataFrame(rows)
    order = np.random.default_rng(0).permutation(len(df))
    df["split"] = "train"
    df.loc[order[20:26], "split"] = "val"
    df.loc[order[26:], "split"] = "test"
    path = tmp_path_factory.mktemp("ddp") / "bimodal.csv"
    df.to_csv(path, index=False)
    return path


# ---- the pieces, in one process ----------------------------------------------------------------
def test_sharded_batches_deal_each_global_batch_to_the_ranks():
    order, kinds = list(range(10)), [i % 3 == 0 for i in range(10)]
    batches = ShardedBatches(order, 4, kinds=kinds)
    assert list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # one process: plain batches in order
    for start in range(0, 10, 4):
        batch = order[start:start + 4]
        shards = [unpad(batches.shard(batch, rank, 2)) for rank in range(2)]
        real = sorted(i for rows, pads in shards for i, pad in zip(rows, pads) if not pad)
        assert real == batch  # the global batch, each row once
        for rows, _ in shards:  # every rank has a row of each kind the batch has
            assert {kinds[i] for i in rows} == {kinds[i] for i in batch}
    # the last batch has one row of each kind: each rank gets one and a zero-weight copy of the other
    assert [batches.shard([8, 9], rank, 2) for rank in range(2)] == [[8, -10], [-9, 9]]


def test_zero_weight_copies_in_bimodal_batches(bimodal_table, tmp_path):
    frame = pd.read_csv(bimodal_table)
    splits = {k: frame[frame.split == k].drop(columns="split").reset_index(drop=True) for k in ("train", "val", "test")}
    _, seen, _ = prepare(splits, FitConfig(model="roost"), cache=GraphCache(tmp_path))
    ds = BimodalDataset(seen["train"])
    collate = _train_loader(ds, ShardedBatches(range(len(ds)), 4)).collate_fn
    batch = collate([3, pad_index(5)])
    assert batch.n == 2 and batch.weight.view(-1).tolist() == [1.0, 0.0] and batch.real.view(-1).tolist() == [1.0, 0.0]
    assert collate([3, 5]).weight is None  # no copy: the batch is what one process builds


def test_loss_is_the_weighted_mean_in_one_process():
    per_row, w = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 3.0])
    loss, shown, (n,) = weighted_mean_loss(per_row, w, torch.tensor(3.0))
    assert float(loss) == pytest.approx(13 / 4) and float(shown) == pytest.approx(13 / 4) and float(n) == 3


@pytest.mark.parametrize("devices, strategy, message", [
    (0, "auto", "devices must be a whole number ≥ 1"),
    (2, "ddp_spawn", "use ddp"),
    (2, "fsdp", "strategy must be one of auto, ddp"),
])
def test_bad_options_fail_before_any_work(devices, strategy, message, bimodal_table, tmp_path):
    with pytest.raises(ValueError, match=message):
        check_parallel(devices, strategy)
    from typer.testing import CliRunner

    from cosynth.cli import app

    for family in ("roost", "voxel"):
        extra = ["--label", "target"] if family == "voxel" else []
        result = CliRunner().invoke(app, ["train", family, str(bimodal_table), *extra, "-o", str(tmp_path / family),
                                          "--devices", str(devices), "--strategy", strategy])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / family).exists()  # nothing was started


# ---- two processes against one ---------------------------------------------------------------
def _bimodal(family: str, table: Path, out: Path, devices: int, epochs: int = 2) -> pd.DataFrame:
    cli("train", family, str(table), "-o", str(out), "--epochs", str(epochs), "--batch-size", "8", "--lr", "1e-3",
        "--threads", "1", cache=out.parent / "cache", devices=devices)
    return pd.read_csv(out / "seed0" / "predictions.csv")


@pytest.mark.parametrize("family", ["roost", "cgcnn", "cosnet"])
def test_two_processes_match_one_bimodal(family, bimodal_table, tmp_path):
    one = _bimodal(family, bimodal_table, tmp_path / "one", 1)
    two = _bimodal(family, bimodal_table, tmp_path / "two", 2)
    assert list(one.id) == list(two.id)
    scale = float(pd.read_csv(bimodal_table)["target"].std())
    worst = float(np.abs(one.prediction - two.prediction).max()) / scale
    print(f"{family}: 1 vs 2 processes, max |Δ prediction| = {worst:.2e} × std(target)")  # shown by pytest -s
    assert worst <= BIMODAL_PREDICTION_TOLERANCE, f"{family}: max |Δ prediction| = {worst:.2e} × std(target)"
    hist_one, hist_two = (pd.read_csv(p / "seed0" / "history.csv") for p in (tmp_path / "one", tmp_path / "two"))
    assert list(hist_two.epoch) == [0, 1]  # rank 0 alone wrote the history, once per epoch
    np.testing.assert_allclose(hist_two.train_loss, hist_one.train_loss, rtol=1e-3)
    assert json.loads((tmp_path / "two" / "seed0" / "config.json").read_text())["devices"] == 2


def test_an_interrupted_two_process_run_resumes(bimodal_table, tmp_path):
    run = tmp_path / "run"
    _bimodal("roost", bimodal_table, run, 2, epochs=1)  # "killed" after epoch 0
    resumed = _bimodal("roost", bimodal_table, run, 2, epochs=2)
    assert list(pd.read_csv(run / "seed0" / "history.csv").epoch) == [0, 1]
    straight = _bimodal("roost", bimodal_table, tmp_path / "one", 1, epochs=2)
    scale = float(pd.read_csv(bimodal_table)["target"].std())
    assert float(np.abs(resumed.prediction - straight.prediction).max()) / scale <= BIMODAL_PREDICTION_TOLERANCE


def test_two_processes_match_one_voxel(mp_sample, tmp_path):
    """With uneven loss weights (each process's loss is scaled by the global weight sum) and a batch
    size that does not divide: 6 training crystals in batches of 5, so the second process gets a
    zero-weight copy in the last step, which must change nothing."""
    table = tmp_path / "voxel.csv"
    frame = mp_sample(6, 4, nrows=400)  # 12 small crystals
    frame.assign(w=np.linspace(0.2, 3.0, len(frame))).to_csv(table, index=False)
    states = []
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        cli("train", "voxel", str(table), "--label", "label", "--id-column", "material_id", "-o", str(out),
            "--epochs", "1", "--batch-size", "5", "--split", "50/25/25", "--precision", "fp32", "--weight-column", "w",
            cache=tmp_path / "cache", devices=devices)
        states.append(torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"])
    one, two = states
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one if one[k].is_floating_point())
    print(f"voxel: 1 vs 2 processes, max |Δ weight| = {worst:.2e}")  # shown by pytest -s
    assert worst <= VOXEL_WEIGHT_TOLERANCE, f"max |Δ weight| = {worst:.2e}"
