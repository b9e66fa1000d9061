"""`cosynth screen` on a real local Ray cluster started here: it matches `cosynth predict` row for row,
resumes, and loses no row when a predicting worker is killed mid-run."""

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cosynth.cli import app
from cosynth.models.registry import save_model
from cosynth.models.voxel_cnn.model import VoxelCNN
from cosynth.predict import predict, torch_threads
from cosynth.scale import ScreenOptions, read_screen, screen

ray = pytest.importorskip("ray", reason="cosynth screen needs the Ray extra (in the test extra)")
DATA = Path(__file__).resolve().parents[1] / "io" / "data"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster: 3 logical CPUs = 2 predicting actors + 1 for the parse tasks."""
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mp_sample):
    """Real MP crystals as a table and as files, formula-only rows, broken files and a missing path."""
    path = tmp_path_factory.mktemp("screen_inputs")
    mp = mp_sample(per_class=12, max_sites=10)
    mp[["material_id", "cif"]].to_csv(path / "mp.csv", index=False)
    pd.DataFrame({"id": ["f1", "f2", "f3"], "formula": ["SiO2", "NaNO3", "Xx2O"]}).to_csv(path / "formulas.csv",
                                                                                           index=False)
    return [str(path / "mp.csv"), str(DATA / "good"), str(DATA / "bad"), str(path / "formulas.csv"),
            str(path / "missing.cif")]


def _same_rows(screened: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every crystal's row is the same, to the bit."""
    def plain(frame):  # missing is missing, whatever the dtype's name for it
        frame = frame.sort_values("id").reset_index(drop=True).astype(object)
        return frame.where(frame.notna(), None)

    left, right = plain(screened.drop(columns="shard")), plain(expected)
    assert list(left.columns) == list(right.columns)
    pd.testing.assert_frame_equal(left, right, check_exact=True)


def test_screen_matches_predict_and_resumes(cluster, inputs, tmp_path):
    options = ScreenOptions(model="cosynth-synth")
    expected = predict(inputs, "cosynth-synth").crystals
    out = tmp_path / "screen"
    summary = screen(inputs, out, options, shards=5, actors=2)
    rows = read_screen(out)
    assert summary.rows == len(expected) == len(rows) and summary.shards_run == 5
    assert summary.errors == int((expected["status"] != "ok").sum()) > 0
    _same_rows(rows, expected)
    assert rows["shard"].nunique() > 1

    again = screen(inputs, out, options, shards=5, actors=2)  # a rerun has nothing left to do
    assert again.shards_run == 0 and again.rows == summary.rows
    lost = out / "rows" / "shard=00003" / "part.parquet"
    n_lost = len(pd.read_parquet(lost))
    lost.unlink()
    redo = screen(inputs, out, options, shards=5, actors=2)
    assert redo.shards_run == 1 and redo.rows_this_run == n_lost
    _same_rows(read_screen(out), expected)

    with pytest.raises(ValueError, match="other inputs, options"):
        screen(inputs, out, ScreenOptions(model="cosynth-synth", seed=1), shards=5)


def test_predict_rows_do_not_depend_on_the_torch_thread_count(inputs):
    """Actors and Slurm tasks run with their own thread counts; 1 vs 2 threads once moved a composition
    weight of these crystals by 1.8e-7."""
    import torch

    frames = []
    for threads in (1, 2):
        with torch_threads(threads):
            frames.append(predict(inputs, "cosynth-synth").crystals)
            assert torch.get_num_threads() == threads  # predict restores the caller's count
    _same_rows(frames[0].assign(shard=0), frames[1])


def test_screen_command_and_its_checks(cluster, inputs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["screen", *inputs[:2], "-o", str(out), "--shards", "3", "--actors", "2"])
    assert result.exit_code == 0, result.output
    assert "screened" in result.output and (out / "manifest.json").exists()
    _same_rows(read_screen(out), predict(inputs[:2], "cosynth-synth").crystals)
    too_many = runner.invoke(app, ["screen", inputs[0], "-o", str(tmp_path / "x"), "--actors", "5"])
    assert too_many.exit_code == 2 and "the Ray cluster has 3" in too_many.output
    bad = runner.invoke(app, ["screen", inputs[0], "-o", str(tmp_path / "y"), "--precision", "fp16"])
    assert bad.exit_code == 2 and "--precision" in bad.output


def _predicting_workers() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "MapBatches(_Predictor)" in " ".join(p.info["cmdline"] or [])]


def test_a_killed_worker_loses_no_row(cluster, mp_sample, tmp_path):
    """SIGKILL one predicting actor after the first shard is written: Ray restarts it and retries its
    batches; every crystal gets its row, with the numbers of an uninterrupted `predict`."""
    table = tmp_path / "mp.csv"
    mp_sample(per_class=10, max_sites=8)[["material_id", "cif"]].to_csv(table, index=False)
    model = save_model(VoxelCNN(filters=8).eval(), tmp_path / "voxel.pt", {"sampler": "haar"})
    options = ScreenOptions(model=str(model), ensemble=4)
    expected = predict([str(table)], str(model), ensemble=4).crystals
    out = tmp_path / "killed"
    result = {}
    run = threading.Thread(target=lambda: result.update(summary=screen([str(table)], out, options, shards=10,
                                                                      actors=2, batch_size=1)))
    run.start()
    deadline = time.time() + 120
    while not list(out.glob("rows/shard=*/part.parquet")) and time.time() < deadline and run.is_alive():
        time.sleep(0.2)
    victims = _predicting_workers()
    assert victims and run.is_alive(), "the screen ended before a worker could be killed"
    os.kill(victims[0], signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive() and "summary" in result
    assert result["summary"].rows == len(expected)
    assert victims[0] not in _predicting_workers()
    _same_rows(read_screen(out), expected)
