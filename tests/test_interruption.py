"""Real interruptions: SIGTERM during `cosynth predict`, SIGKILL mid-epoch during training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

COSYNTH = [sys.executable, "-m", "cosynth.cli"]


def _examples() -> Path:
    import pymatgen.util

    return Path(pymatgen.util.__file__).parent / "structures"


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*COSYNTH, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)


class _Watcher:
    """Collects a child's stderr in a thread so the test can wait for a sign of progress."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for chunk in iter(lambda: proc.stderr.read(64), ""):
            self.text += chunk

    def wait_for(self, pattern: str, timeout: float = 300) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.text):
                return True
            time.sleep(0.05)
        return False


@pytest.mark.slow
def test_sigterm_during_predict_keeps_the_rows_and_resume_finishes_them(tmp_path):
    from cosynth.models.registry import save_model
    from cosynth.models.voxel_cnn.model import VoxelCNN

    torch.manual_seed(0)
    model = save_model(VoxelCNN(), tmp_path / "voxel.pt", {"sampler": "haar"})  # the slow family, to stop midway
    args = [_examples(), "-E", "12", "--seed", "1", "--model", model]
    reference = _run(["predict", *args, "-o", tmp_path / "full.csv"])
    assert reference.returncode == 0, reference.stderr
    full = pd.read_csv(tmp_path / "full.csv")

    out = tmp_path / "part.csv"
    proc = subprocess.Popen([*COSYNTH, "predict", *map(str, args), "-o", str(out)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    watch = _Watcher(proc)
    assert watch.wait_for(r"predict:\s+\d+%.*\b([3-9]|1\d)/\d+ "), watch.text  # a few crystals done
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    watch.thread.join(timeout=10)
    assert "interrupted: partial output" in watch.text and "--resume" in watch.text
    part = pd.read_csv(out)
    meta = json.loads((tmp_path / "part.csv.meta.json").read_text())
    assert meta["partial"] is True and meta["rows"] == len(part) and 0 < len(part) < len(full)
    assert list(part["id"]) == list(full["id"][: len(part)])

    resumed = _run(["predict", *args, "-o", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed: {len(part)} rows kept" in resumed.stderr
    done = pd.read_csv(out)
    pd.testing.assert_frame_equal(done, full)
    assert json.loads((tmp_path / "part.csv.meta.json").read_text())["partial"] is False


def test_exit_status_says_when_nothing_was_predicted(tmp_path):
    missing = _run(["predict", tmp_path / "nope.cif", "-E", "1"])
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\n_cell_length_a 3\n")
    assert _run(["predict", broken, "-E", "1"]).returncode == 1
    (tmp_path / "empty").mkdir()
    empty = _run(["predict", tmp_path / "empty", "-E", "1"])
    assert empty.returncode == 1 and "holds no crystal files" in empty.stdout
    bad_out = _run(["predict", broken, "-o", tmp_path / "out.xlsx"])
    assert bad_out.returncode == 2 and "unsupported table format" in bad_out.stderr


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_ends_with_the_same_weights(tmp_path, mp_sample):
    table = tmp_path / "table.csv"
    mp_sample(24, 6).to_csv(table, index=False)
    args = ["train", "voxel", table, "--label", "label", "--id-column", "material_id", "--epochs", "3",
            "--batch-size", "4", "--seed", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert _run([*args, "-o", tmp_path / "full"], env=env).returncode == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen([*COSYNTH, *map(str, args), "-o", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well into the second epoch
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.pt").exists()
    restarted = _run([*args, "-o", run], env=env)
    assert restarted.returncode == 0, restarted.stderr

    def final(folder):
        return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]

    a, b = final(tmp_path / "full"), final(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(pd.read_csv(run / "history.csv")) == 3
