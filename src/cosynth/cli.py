"""`cosynth` command line: each command is a thin layer over the Python function of that name."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Machine learning on crystals you can trust: synthesizability from structure.")
train_app = typer.Typer(no_args_is_help=True, help="Train models.")
app.add_typer(train_app, name="train")
reproduce_app = typer.Typer(no_args_is_help=True, help="Reproduce the source papers' studies end to end.")
app.add_typer(reproduce_app, name="reproduce")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _show(df, out: Optional[Path]) -> None:
    from cosynth.predict import write_table

    if out is not None:
        write_table(df, out)
        typer.echo(f"wrote {len(df)} rows to {out}", err=True)
    elif sys.stdout.isatty():
        _print_table(df)
    else:
        df.to_csv(sys.stdout, index=False)


def _print_table(df) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in df.columns:
        table.add_column(str(col), overflow="fold", max_width=60 if col == "error" else None)
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.4f}")
            else:
                cells.append("" if v is None or str(v) in ("<NA>", "None") else str(v))
        table.add_row(*cells)
    Console(width=max(120, Console().width)).print(table)


@app.command()
def predict(
    inputs: List[str] = typer.Argument(..., help="CIF/POSCAR/extxyz/JSON files, folders, globs or tables (csv/parquet/jsonl)."),
    model: str = typer.Option("cosynth-synth-mp", "--model", "-m", help="Bundled model name or model file."),
    ensemble: int = typer.Option(100, "--ensemble", "-E", help="Random rotations per crystal."),
    seed: int = typer.Option(0, help="Seed of the rotations (results depend only on seed and crystal id)."),
    sampler: Optional[str] = typer.Option(None, help="haar (uniform on SO(3)), sobol (low-discrepancy) or xiespp; default: the model's."),
    rotations: Optional[Path] = typer.Option(None, help="CSV of explicit angle triples alpha,beta,gamma (degrees)."),
    per_rotation: Optional[Path] = typer.Option(None, "--per-rotation", help="Also write one row per crystal × rotation here."),
    threshold: float = typer.Option(0.5, help="Label threshold on the likelihood and on each rotation."),
    workers: int = typer.Option(1, help="Processes building images (no effect on results)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Crystals imaged ahead of the CNN (no effect on results)."),
    id_column: Optional[str] = typer.Option(None, help="Id column of input tables."),
    structure_column: Optional[str] = typer.Option(None, help="Structure (CIF text or path) column of input tables."),
    majority: bool = typer.Option(False, "--resolve-disorder-majority", help="Keep the majority species of disordered sites instead of rejecting the crystal."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Output table: .csv, .parquet or .json (JSON lines)."),
) -> None:
    """Synthesizability likelihood per crystal: mean over rotated images, spread, consistency."""
    from cosynth.predict import predict as run_predict, write_table

    if sampler not in (None, "haar", "sobol", "xiespp"):
        _fail(f"--sampler must be haar, sobol or xiespp, not {sampler!r}")
    try:
        result = run_predict(inputs, model, ensemble=ensemble, seed=seed, sampler=sampler, rotations=rotations,
                             threshold=threshold, per_rotation=per_rotation is not None, workers=workers,
                             batch_size=batch_size, progress=True, id_column=id_column,
                             structure_column=structure_column, resolve_disorder="majority" if majority else "error")
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    _show(result.crystals, out)
    if per_rotation is not None:
        write_table(result.rotations, per_rotation)
    n_err = int((result.crystals["status"] == "error").sum())
    if n_err:
        typer.echo(f"{n_err} of {len(result.crystals)} crystals could not be predicted (see the error column)", err=True)


@app.command("import-xiespp")
def import_xiespp(
    weights: Path = typer.Argument(..., exists=True, dir_okay=False, help="Published XIE-SPP Keras HDF5 weights."),
    out: Path = typer.Option(..., "--output", "-o", help="cosynth model file to write."),
) -> None:
    """Convert the published XIE-SPP weights (h5py only, no TensorFlow) into a cosynth model file."""
    import hashlib

    from cosynth.models.store import save_model
    from cosynth.models.voxel_cnn.model import VoxelCNN, load_keras_weights

    try:
        model = load_keras_weights(VoxelCNN(), weights)
    except (OSError, KeyError, ValueError) as err:
        _fail(f"cannot read {weights}: {err}")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    save_model(model, out, sampler="xiespp", provenance={
        "source": "XIE-SPP v2 published Keras weights (Davariashtiyani & Kadkhodaei)", "file": weights.name,
        "sha256": digest, "license_note": "upstream weights are CC BY-ND 4.0; do not redistribute the converted file"})
    typer.echo(f"wrote {out} (sha256 of source weights {digest[:12]}…)")


@train_app.command("voxel")
def train_voxel_cmd(
    table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Table with a structure column (CIF text or path) and a 0/1 label."),
    label: str = typer.Option(..., help="Label column (1 = synthesizable)."),
    out: Path = typer.Option(..., "--output", "-o", help="Run directory (re-running resumes)."),
    split: str = typer.Option("60/20/20", help="Train/validation/test percentages (stratified by label)."),
    epochs: int = typer.Option(50),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-3),
    sampler: str = typer.Option("haar"),
    max_minutes: Optional[float] = typer.Option(None, help="Stop after this wall time (resume later)."),
    id_column: Optional[str] = typer.Option(None),
    structure_column: Optional[str] = typer.Option(None),
    resume: bool = typer.Option(True, help="Resume from RUN_DIR/checkpoints/last.ckpt when present."),
    weight_column: Optional[str] = typer.Option(
        None, help="Per-row training-loss weights (e.g. from `cosynth mitigate TABLE --method reweight`)."),
    split_column: Optional[str] = typer.Option(
        None, help="Use the table's train/val/test column (e.g. `split` from `cosynth data build`) instead of --split."),
) -> None:
    """Train the voxel CNN with a fresh random rotation per crystal per epoch."""
    from cosynth.training.voxel import TrainConfig, train_voxel

    try:
        fractions = tuple(float(x) for x in split.split("/"))
        assert len(fractions) == 3 and all(f > 0 for f in fractions)
    except (ValueError, AssertionError):
        _fail(f"--split must look like 60/20/20, got {split!r}")
    config = TrainConfig(label=label, split=fractions, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                         sampler=sampler, max_minutes=max_minutes, id_column=id_column,
                         structure_column=structure_column, weight_column=weight_column,
                         split_column=split_column)
    try:
        metrics = train_voxel(table, out, config, resume=resume)
    except ValueError as err:
        _fail(str(err))
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def models() -> None:
    """List the bundled models and their test metrics."""
    from cosynth.models.store import bundled_models, load_model

    for name in bundled_models():
        _, meta = load_model(name)
        m = meta.get("metrics", {})
        typer.echo(f"{name}: sampler={meta['image']['sampler']} test AUC={m.get('roc_auc')} acc={m.get('accuracy')}")


@app.command()
def demo(ensemble: int = typer.Option(30, "--ensemble", "-E")) -> None:
    """Predict with the bundled model on example crystals that ship with pymatgen."""
    import pymatgen.util

    from cosynth.predict import predict as run_predict

    folder = Path(pymatgen.util.__file__).parent / "structures"
    files = sorted(folder.glob("*.json"))
    typer.echo(f"cosynth demo: bundled model 'cosynth-synth-mp', {len(files)} example crystals from {folder}, "
               f"{ensemble} random rotations each\n")
    from cosynth.models.store import DEFAULT_MODEL, PRETRAINED_DIR, load_model

    result = run_predict(files, ensemble=ensemble, seed=0, progress=True)
    _print_table(result.crystals.drop(columns=["n_rotations"]))
    auc = load_model(DEFAULT_MODEL)[1].get("metrics", {}).get("roc_auc")
    typer.echo(f"\nThe bundled model's test ROC AUC is {auc:.3f}; read its limits before trusting a likelihood: "
               f"{PRETRAINED_DIR / (DEFAULT_MODEL + '.md')}")


def _register_groups() -> None:
    import importlib

    from cosynth.commands import GROUPS

    for name in GROUPS:
        importlib.import_module(name).register(app, train_app, reproduce_app)


_register_groups()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
