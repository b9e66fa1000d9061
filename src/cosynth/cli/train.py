"""`cosynth train voxel` (the Roost, CGCNN and COSNet trainers are in :mod:`cosynth.cli.cosnet`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cosynth.cli.common import fail

DEVICES_HELP = ("CPU processes to train on (Lightning DDP, gloo); --batch-size stays the global batch, "
                "so the weights match a 1-process run up to rounding.")
STRATEGY_HELP = "auto (one process for --devices 1, DDP otherwise) or ddp."


def train_voxel_cmd(
    table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Table with a structure column (CIF text or path) and a 0/1 label."),
    label: str = typer.Option(..., help="Label column (1 = synthesizable)."),
    out: Path = typer.Option(..., "--output", "-o", help="Run directory (re-running resumes)."),
    split: str = typer.Option("60/20/20", help="Train/validation/test percentages (stratified by label)."),
    epochs: int = typer.Option(50),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-4, help="Adam learning rate (1e-3 kills this network on data without a density shortcut)."),
    sampler: str = typer.Option("haar"),
    max_minutes: Optional[float] = typer.Option(None, help="Stop after this wall time (resume later)."),
    id_column: Optional[str] = typer.Option(None),
    structure_column: Optional[str] = typer.Option(None),
    resume: bool = typer.Option(True, help="Resume from RUN_DIR/checkpoints/last.ckpt when present."),
    weight_column: Optional[str] = typer.Option(
        None, help="Per-row training-loss weights (e.g. from `cosynth mitigate TABLE --method reweight`)."),
    precision: str = typer.Option("auto", help="auto (bf16 where the hardware has native bf16 matrix units), fp32 or bf16."),
    split_column: Optional[str] = typer.Option(
        None, help="Use the table's train/val/test column (e.g. `split` from `cosynth data build`) instead of --split."),
    devices: int = typer.Option(1, help=DEVICES_HELP),
    strategy: str = typer.Option("auto", help=STRATEGY_HELP),
) -> None:
    """Train the voxel CNN with a fresh random rotation per crystal per epoch."""
    from cosynth.evaluate.evaluate import test_run
    from cosynth.training.parallel import check_parallel
    from cosynth.training.voxel import TrainConfig, train_voxel

    try:
        fractions = tuple(float(x) for x in split.split("/"))
        assert len(fractions) == 3 and all(f > 0 for f in fractions)
    except (ValueError, AssertionError):
        fail(f"--split must look like 60/20/20, got {split!r}")
    config = TrainConfig(label=label, split=fractions, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                         sampler=sampler, max_minutes=max_minutes, id_column=id_column,
                         structure_column=structure_column, weight_column=weight_column,
                         split_column=split_column, precision=precision, devices=devices, strategy=strategy)
    if precision not in ("auto", "fp32", "bf16"):
        fail(f"--precision must be auto, fp32 or bf16, not {precision!r}")
    try:
        check_parallel(devices, strategy)
        if train_voxel(table, out, config, resume=resume) is None:
            return  # an extra DDP process: rank 0 tests and reports
        metrics = test_run(out, table)
    except ValueError as err:
        fail(str(err))
    skipped = out / "skipped.csv"
    if skipped.exists():
        import pandas as pd

        reasons = pd.read_csv(skipped)["error"].value_counts()
        typer.echo(f"{int(reasons.sum())} rows skipped (all in {skipped}):\n"
                   + "\n".join(f"  {n} × {why}" for why, n in reasons.head(5).items()), err=True)
    typer.echo(json.dumps(metrics, indent=2))


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    train_app.command("voxel")(train_voxel_cmd)
