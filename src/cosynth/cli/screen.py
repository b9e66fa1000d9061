"""`cosynth screen`: predictions for very many crystals on a Ray cluster, resumable shard by shard."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cosynth.cli.common import fail
from cosynth.cli.predict import check_prediction_options
from cosynth.config import DEFAULT_MODEL


def screen(
    inputs: List[str] = typer.Argument(..., help="Files, folders, globs and CSV/Parquet/JSON-lines tables with a "
                                                 "structure (CIF text or path) or formula column."),
    out: Path = typer.Option(..., "--output", "-o", help="Output folder: rows/shard=N/part.parquet + manifest.json."),
    ray_address: str = typer.Option("local", "--ray", help="local (start Ray here unless one runs) or a cluster "
                                                           "address such as 10.0.0.1:6379 or auto."),
    shards: int = typer.Option(16, help="Shards (the unit of resumption; crystals are assigned by id as with "
                                        "`predict --shard`). About 1,000 crystals per shard is a good size."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled model name or model file (any family)."),
    actors: Optional[int] = typer.Option(None, help="Predicting actors (default: the cluster's CPUs but one)."),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="CPUs (and torch threads) of each actor."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="GPUs of each actor (voxel CNNs run there)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Crystals per actor call (no effect on results)."),
    ensemble: int = typer.Option(100, "--ensemble", "-E", help="Random rotations per crystal (voxel models)."),
    seed: int = typer.Option(0, help="Seed of the rotations (results depend only on seed and crystal id)."),
    sampler: Optional[str] = typer.Option(None, help="haar, sobol or xiespp; default: the model's."),
    threshold: Optional[float] = typer.Option(None, help="Label threshold (default: the model's, else 0.5)."),
    precision: str = typer.Option("auto", help="Voxel CNN arithmetic: auto, fp32 or bf16."),
    id_column: Optional[str] = typer.Option(None, help="Id column of input tables."),
    structure_column: Optional[str] = typer.Option(None, help="Structure column of input tables."),
    formula_column: Optional[str] = typer.Option(None, help="Formula column of input tables."),
    majority: bool = typer.Option(False, "--resolve-disorder-majority",
                                  help="Keep the majority species of disordered sites instead of rejecting the crystal."),
) -> None:
    """Screen crystals with a Ray Data pipeline: parse tasks, an actor pool that predicts, one Parquet file per shard.

    Rows are those of `cosynth predict` (bad input stays a row with its error). A rerun of the same
    command skips finished shards; Ctrl-C keeps every shard already written (exit status 130).
    """
    from cosynth.scale.screen import ScreenOptions
    from cosynth.scale.screen import screen as run_screen

    check_prediction_options(precision, sampler, threshold)
    if ensemble < 1 or shards < 1 or batch_size < 1 or (actors is not None and actors < 1):
        fail("--ensemble, --shards, --batch-size and --actors must be at least 1")
    options = ScreenOptions(model=model, ensemble=ensemble, seed=seed, sampler=sampler, threshold=threshold,
                            precision=precision, resolve_disorder="majority" if majority else "error",
                            id_column=id_column, structure_column=structure_column, formula_column=formula_column)
    try:
        summary = run_screen(inputs, out, options, shards=shards, ray_address=ray_address, actors=actors,
                             cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                             progress=True)
    except (FileNotFoundError, ValueError, ImportError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the shards written so far are kept in {out}; run the same command again to "
                   "continue", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(summary.line(), err=True)
    if summary.rows and summary.errors == summary.rows:
        raise typer.Exit(code=1)


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    app.command()(screen)
