"""Run checkpoints shared by every training loop."""

import warnings

import pytest
import torch

from cosynth.training import run_checkpoints


def test_a_moved_run_folder_keeps_its_best_score(tmp_path):
    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    saved_best, _ = run_checkpoints(old, "val_loss")
    saved_best.best_model_score = torch.tensor(0.61)
    saved_best.best_model_path = str(old / "checkpoints" / "best.ckpt")
    saved_best.best_k_models = {saved_best.best_model_path: torch.tensor(0.61)}
    state = saved_best.state_dict()

    best, _ = run_checkpoints(new, "val_loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning warns when it drops the score
        best.load_state_dict(state)
    # without the score, the first resumed epoch would replace best.ckpt however bad it is
    assert float(best.best_model_score) == pytest.approx(0.61)
    assert best.best_model_path == str(new / "checkpoints" / "best.ckpt")
    assert list(best.best_k_models) == [str(new / "checkpoints" / "best.ckpt")]


def test_an_unmoved_run_folder_restores_as_before(tmp_path):
    saved_best, _ = run_checkpoints(tmp_path, "val_loss")
    saved_best.best_model_score = torch.tensor(0.5)
    saved_best.best_model_path = str(tmp_path / "checkpoints" / "best.ckpt")
    best, _ = run_checkpoints(tmp_path, "val_loss")
    best.load_state_dict(saved_best.state_dict())
    assert float(best.best_model_score) == 0.5 and best.best_model_path == saved_best.best_model_path
