"""`cosynth predict` (any model family) and `cosynth demo`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cosynth.cli.common import check_output, fail, print_table, show

SAMPLERS = ("haar", "sobol", "xiespp")


def predict(
    inputs: Optional[List[str]] = typer.Argument(
        None, help="CIF/POSCAR/extxyz/JSON files, folders, globs or tables (csv/parquet/jsonl; a formula column "
                   "without structures is fine for composition models)."),
    model: str = typer.Option("cosynth-synth-mp", "--model", "-m", help="Bundled model name or model file (any family)."),
    formula: Optional[str] = typer.Option(None, "--formula", "-f", help="Comma-separated formulas, e.g. SiO2,TiO2."),
    ensemble: int = typer.Option(100, "--ensemble", "-E", help="Random rotations per crystal (voxel models)."),
    seed: int = typer.Option(0, help="Seed of the rotations (results depend only on seed and crystal id)."),
    sampler: Optional[str] = typer.Option(None, help="haar (uniform on SO(3)), sobol (low-discrepancy) or xiespp; default: the model's."),
    rotations: Optional[Path] = typer.Option(None, help="CSV of explicit angle triples alpha,beta,gamma (degrees)."),
    per_rotation: Optional[Path] = typer.Option(None, "--per-rotation", help="Also write one row per crystal × rotation here."),
    threshold: float = typer.Option(0.5, help="Label threshold on the likelihood and on each rotation."),
    workers: int = typer.Option(1, help="Processes building images (no effect on results)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Crystals imaged ahead of the CNN (no effect on results)."),
    id_column: Optional[str] = typer.Option(None, help="Id column of input tables."),
    structure_column: Optional[str] = typer.Option(None, help="Structure (CIF text or path) column of input tables."),
    formula_column: Optional[str] = typer.Option(None, help="Formula column of input tables."),
    majority: bool = typer.Option(False, "--resolve-disorder-majority", help="Keep the majority species of disordered sites instead of rejecting the crystal."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Output table: .csv, .parquet or .json (JSON lines)."),
) -> None:
    """Predictions per crystal or formula with any cosynth model; the `modality` column says what each row used."""
    from cosynth.io.files import write_table
    from cosynth.predict import predict as run_predict

    if sampler not in (None, *SAMPLERS):
        fail(f"--sampler must be haar, sobol or xiespp, not {sampler!r}")
    if not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be within [0, 1], not {threshold}")
    if workers < 1 or batch_size < 1 or ensemble < 1:
        fail("--workers, --batch-size and --ensemble must be at least 1")
    check_output(out)
    check_output(per_rotation, "--per-rotation")
    formulas = [f.strip() for f in formula.split(",") if f.strip()] if formula else None
    if not inputs and not formulas:
        fail("give INPUT files/folders/tables or --formula")
    try:
        result = run_predict(inputs or None, model, ensemble=ensemble, seed=seed, sampler=sampler, rotations=rotations,
                             threshold=threshold, per_rotation=per_rotation is not None, workers=workers,
                             batch_size=batch_size, progress=True, id_column=id_column,
                             structure_column=structure_column, formula_column=formula_column, formulas=formulas,
                             resolve_disorder="majority" if majority else "error")
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    show(result.crystals, out)
    if per_rotation is not None and result.rotations is not None:
        write_table(result.rotations, per_rotation)
    n_err = int((result.crystals["status"] == "error").sum())
    if n_err:
        typer.echo(f"{n_err} of {len(result.crystals)} crystals could not be predicted (see the error column)", err=True)


def demo(ensemble: int = typer.Option(30, "--ensemble", "-E")) -> None:
    """Predict with the bundled model on example crystals that ship with pymatgen."""
    import pymatgen.util

    from cosynth.models.registry import DEFAULT_MODEL, PRETRAINED_DIR, load_model
    from cosynth.predict import predict as run_predict

    folder = Path(pymatgen.util.__file__).parent / "structures"
    files = sorted(folder.glob("*.json"))
    typer.echo(f"cosynth demo: bundled model {DEFAULT_MODEL!r}, {len(files)} example crystals from {folder}, "
               f"{ensemble} random rotations each\n")
    loaded = load_model(DEFAULT_MODEL)
    result = run_predict(files, loaded, ensemble=ensemble, seed=0, progress=True)
    print_table(result.crystals.drop(columns=["n_rotations", "source"]))
    auc = loaded.metrics.get("roc_auc")
    typer.echo(f"\nThe bundled model's test ROC AUC is {auc:.3f}; read its limits before trusting a likelihood: "
               f"{PRETRAINED_DIR / (DEFAULT_MODEL + '.md')}")


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    app.command()(predict)
    app.command()(demo)
