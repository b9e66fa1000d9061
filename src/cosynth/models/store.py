"""Self-describing model files: one file rebuilds the model and says how to make its inputs.

A model file is a ``torch.save`` dict (loadable with ``weights_only=True``) holding the model
family, its constructor parameters, the image parameters (box, grid, channels, default
sampler), provenance (where the weights came from) and, optionally, metrics. Bundled models
live in ``cosynth/pretrained`` and load by name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from cosynth.models.voxel_cnn.model import VoxelCNN
from cosynth.represent import voxel

FORMAT = "cosynth-model/1"
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = "cosynth-synth-mp"


def image_spec(sampler: str) -> dict:
    return {"box_angstrom": voxel.BOX, "grid": voxel.GRID,
            "channels": ["atomic_number/119", "group/19", "period/8"], "sampler": sampler}


def save_model(model: VoxelCNN, path, *, sampler: str, provenance: dict, metrics: dict | None = None,
               domain: dict | None = None) -> Path:
    """Write ``model`` with everything needed to use it; atomic (temp file + rename).

    ``domain`` (see :mod:`cosynth.evaluate.domain`) carries the training data's statistics, so
    predictions can say how far each crystal lies from what the model was trained on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "family": "voxel_cnn",
        "config": model.config,
        "image": image_spec(sampler),
        "provenance": provenance,
        "metrics": metrics or {},
        **({"domain": domain} if domain else {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def bundled_models() -> list[str]:
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def resolve_model_path(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = PRETRAINED_DIR / f"{name_or_path}.pt"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(
        f"no model file {str(name_or_path)!r} and no bundled model of that name "
        f"(bundled: {', '.join(bundled_models()) or 'none'})"
    )


def load_model(name_or_path=DEFAULT_MODEL) -> tuple[VoxelCNN, dict]:
    """(model in eval mode, metadata) from a model file path or a bundled model name."""
    path = resolve_model_path(name_or_path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT or payload.get("family") != "voxel_cnn":
        raise ValueError(f"{path} is not a cosynth voxel-CNN model file (format {payload.get('format')!r})")
    cfg = dict(payload["config"])
    cfg["hidden"] = tuple(cfg["hidden"])
    model = VoxelCNN(**cfg)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["path"] = str(path)
    return model, meta
