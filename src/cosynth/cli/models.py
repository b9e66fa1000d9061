"""`cosynth models` (bundled models of every family) and `cosynth import-xiespp`."""

from __future__ import annotations

from pathlib import Path

import typer

from cosynth.cli.common import fail


def models() -> None:
    """List the bundled models: family, inputs, task and test metrics."""
    from cosynth.models.registry import DEFAULT_MODEL, bundled_models, load_model

    for name in bundled_models():
        loaded = load_model(name)
        m = loaded.metrics
        sampler = f" sampler={loaded.sampler}" if loaded.sampler else ""
        shown = " ".join(f"{label}={m[key]:.3f}" for key, label in (
            ("roc_auc", "test AUC"), ("within_origin_auc", "within-origin"), ("polymorph_pair_auc", "polymorph pairs"),
            ("accuracy", "acc")) if isinstance(m.get(key), float))
        default = " (default)" if name == DEFAULT_MODEL else ""
        typer.echo(f"{name}{default}: family={loaded.family} inputs={loaded.inputs} task={loaded.task}{sampler} "
                   f"{shown}")


def import_xiespp(
    weights: Path = typer.Argument(..., exists=True, dir_okay=False, help="Published XIE-SPP Keras HDF5 weights."),
    out: Path = typer.Option(..., "--output", "-o", help="cosynth model file to write."),
) -> None:
    """Convert the published XIE-SPP weights (h5py only, no TensorFlow) into a cosynth model file."""
    import hashlib

    from cosynth.models.registry import save_model
    from cosynth.models.voxel_cnn.model import VoxelCNN, load_keras_weights

    try:
        model = load_keras_weights(VoxelCNN(), weights)
    except (OSError, KeyError, ValueError) as err:
        fail(f"cannot read {weights}: {err}")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    save_model(model, out, {"sampler": "xiespp", "task": "classification", "provenance": {
        "source": "XIE-SPP v2 published Keras weights (Davariashtiyani & Kadkhodaei)", "file": weights.name,
        "sha256": digest, "license_note": "upstream weights are CC BY-ND 4.0; do not redistribute the converted file"}})
    typer.echo(f"wrote {out} (sha256 of source weights {digest[:12]}…)")


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    app.command()(models)
    app.command("import-xiespp")(import_xiespp)
