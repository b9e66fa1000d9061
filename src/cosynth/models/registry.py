"""One model store for every family: family name → class, one file format, one ``load_model``.

A model file is a ``torch.save`` dict that loads with ``weights_only=True``. It names the
family and its constructor ``config`` (so the file alone rebuilds the network), and it carries
what a caller needs to use the model correctly:

* ``inputs``: ``structure`` (voxel CNN, de-CGCNN), ``composition`` (Roost) or ``either`` (COSNet, and a
  stack with a COSNet member);
* ``task`` (``classification`` → a likelihood, ``regression`` → a value) and ``target_scale``
  (predictions are multiplied by it);
* ``image`` (voxel models: box, grid, channels and the rotation ``sampler`` the model expects),
  ``precision`` it was trained in, the applicability ``domain``, ``provenance`` and ``metrics``.

Files written before this format (``cosynth-model/1``, voxel and Roost/CGCNN/COSNet alike) still
load; their missing fields take the values those files always meant.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cosynth.config import DEFAULT_MODEL
from cosynth.io.files import atomic_write
from cosynth.represent import voxel

__all__ = ["DEFAULT_MODEL", "FAMILIES", "FORMAT", "PRETRAINED_DIR", "LoadedModel", "bundled_models", "image_spec",
           "load_model", "model_class", "published_xiespp", "resolve_model_path", "save_model"]

FORMAT = "cosynth-model/2"
READABLE_FORMATS = ("cosynth-model/1", FORMAT)
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"

# family → (module, class, inputs it needs); classes import lazily so the registry stays light
FAMILIES: dict[str, tuple[str, str, str]] = {
    "voxel_cnn": ("cosynth.models.voxel_cnn.model", "VoxelCNN", "structure"),
    "cgcnn": ("cosynth.models.cgcnn.model", "CGCNN", "structure"),
    "roost": ("cosynth.models.roost.model", "Roost", "composition"),
    "cosnet": ("cosynth.models.cosnet.model", "COSNet", "either"),
    "stack": ("cosynth.models.stack", "Stack", "either"),
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def model_class(family: str) -> type:
    """The network class of ``family`` (one of :data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    module, name, _ = FAMILIES[family]
    return getattr(importlib.import_module(module), name)


def family_of(network: torch.nn.Module) -> str:
    """The family name of a network instance."""
    for family, (_, name, _) in FAMILIES.items():
        if type(network).__name__ == name and isinstance(network, model_class(family)):
            return family
    raise ValueError(f"{type(network).__name__} is not a registered cosynth model class")


def image_spec(sampler: str) -> dict:
    """The voxel-image parameters a voxel model was trained on, with its rotation sampler."""
    return {"box_angstrom": voxel.BOX, "grid": voxel.GRID,
            "channels": ["atomic_number/119", "group/19", "period/8"], "sampler": sampler}


@dataclass
class LoadedModel:
    """A network in eval mode and the metadata of its file; ``predict`` serves every family."""

    network: torch.nn.Module
    meta: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def inputs(self) -> str:
        """``structure``, ``composition`` or ``either``."""
        return self.meta["inputs"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def target_scale(self) -> float:
        return float(self.meta.get("target_scale", 1.0))

    @property
    def sampler(self) -> str | None:
        """Rotation sampler of a voxel model (None for the other families)."""
        return self.meta.get("image", {}).get("sampler")

    @property
    def path(self) -> str:
        return self.meta.get("path", "<in-memory>")

    @property
    def metrics(self) -> dict:
        return self.meta.get("metrics", {})

    @classmethod
    def wrap(cls, network: torch.nn.Module, **meta: Any) -> "LoadedModel":
        """An in-memory network as a LoadedModel (e.g. straight from training); ``meta`` as in a file."""
        family = family_of(network)
        full = _complete({"family": family, "config": network.config, **meta})
        full.setdefault("path", "<in-memory>")
        return cls(network.eval(), full)

    def predict(self, inputs: Any, **options: Any):
        """Predictions table for ``inputs``: see :func:`cosynth.predict.predict` for inputs and options.

        Returns:
            A :class:`cosynth.predict.Prediction`.
        """
        from cosynth.predict import predict  # the predictor is a higher floor; import at call time

        return predict(inputs, self, **options)


def _complete(meta: dict) -> dict:
    """Fill the fields a ``cosynth-model/1`` file left implicit."""
    family = meta["family"]
    meta.setdefault("inputs", FAMILIES[family][2])
    meta.setdefault("task", "classification" if family == "voxel_cnn" else "regression")
    meta.setdefault("target_scale", 1.0)
    meta.setdefault("precision", "fp32")
    if family == "voxel_cnn":
        meta.setdefault("image", image_spec("haar"))
    meta.setdefault("provenance", {})
    meta.setdefault("metrics", {})
    return meta


def save_model(network: torch.nn.Module, path, meta: dict | None = None) -> Path:
    """Write ``network`` and everything needed to use it, atomically.

    Args:
        network: a registered network (its family is taken from its class).
        path: the file to write.
        meta: ``task``, ``target_scale``, ``sampler`` (voxel), ``precision``, ``domain``,
            ``provenance``, ``metrics`` and any other JSON-like fields to keep in the file.

    Returns:
        ``path``.
    """
    meta = dict(meta or {})
    family = family_of(network)
    sampler = meta.pop("sampler", None)
    if family == "voxel_cnn":
        meta["image"] = image_spec(sampler or meta.get("image", {}).get("sampler", "haar"))
    if meta.get("domain") is None:
        meta.pop("domain", None)
    payload = _complete({"family": family, "config": network.config, **meta})
    payload["format"] = FORMAT
    payload.pop("path", None)
    payload["state_dict"] = {k: v.detach().cpu() for k, v in network.state_dict().items()}

    def write(tmp: Path) -> None:
        # through a file object, not a path: torch names the archive inside after a path, here a random
        # temporary name, so the same model would give other bytes each time (a new blob in git per install)
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)

    return atomic_write(path, write)


def bundled_models() -> list[str]:
    """Names of the models that ship inside the package."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def resolve_model_path(name_or_path) -> Path:
    """The file of a bundled model name or a path; FileNotFoundError names the bundled models."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = PRETRAINED_DIR / f"{name_or_path}.pt"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(f"no model file {str(name_or_path)!r} and no bundled model of that name "
                            f"(bundled: {', '.join(bundled_models()) or 'none'})")


def load_model(name_or_path=DEFAULT_MODEL) -> LoadedModel:
    """A model of any family from a bundled name or a file; the file says which class to build.

    Args:
        name_or_path: a bundled model name (see :func:`bundled_models`), a model file, an
            already loaded :class:`LoadedModel` (returned as it is) or a bare network.

    Returns:
        The :class:`LoadedModel` (network in eval mode, metadata with ``path``).
    """
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    if isinstance(name_or_path, torch.nn.Module):  # a bare network: its family's defaults (voxel: haar)
        return LoadedModel.wrap(name_or_path)
    path = resolve_model_path(name_or_path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == _HDF5_MAGIC:
        raise ValueError(f"{path} is an HDF5 (Keras) weights file, not a cosynth model file; convert published "
                         f"XIE-SPP weights with `cosynth import-xiespp {path} -o MODEL.pt`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a cosynth model file (it does not load as safe torch data: {first}); "
                         "model files come from `cosynth train …` or `cosynth import-xiespp`") from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a cosynth model file (format {found!r}; readable: "
                         f"{', '.join(READABLE_FORMATS)})")
    family = payload.get("family")
    if family not in FAMILIES:
        raise ValueError(f"{path}: unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    network = model_class(family).from_config(dict(payload["config"]))
    network.load_state_dict(payload["state_dict"])
    meta = _complete({k: v for k, v in payload.items() if k != "state_dict"})
    meta["path"] = str(path)
    return LoadedModel(network.eval(), meta)


def published_xiespp(weights) -> LoadedModel:
    """The published XIE-SPP Keras weights as a model in memory (their own sampler), for comparisons only:
    their license forbids redistributing a converted file, so nothing is written."""
    from cosynth.models.voxel_cnn.model import VoxelCNN, load_keras_weights

    net = load_keras_weights(VoxelCNN(), weights)
    return LoadedModel.wrap(net, image=image_spec("xiespp"), task="classification",
                            provenance={"source": f"published XIE-SPP weights ({Path(weights).name})"})
