"""Research commands: `cosynth reproduce cosnet-table1`, `sweep`, `probe`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cosynth.cli.common import fail


def _seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,5``."""
    try:
        if "-" in text:
            a, b = text.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        fail(f"--seeds must look like 0-4 or 0,2,5, not {text!r}")


def cosnet_table1(
    dataset: str = typer.Option("band_gap", help="band_gap | refractive_index | rdielectric_constant | li_conductivity"),
    out: Path = typer.Option(Path("runs/cosnet"), "--output", "-o", help="Run folder (DATASET/MODE/seed<k> inside)."),
    modes: str = typer.Option("composition,bimodal_aug,bimodal"),
    seeds: str = typer.Option("0-4", help="Seeds: 0-4 or 0,2,5."),
    epochs: int = typer.Option(200),
    threads: int = typer.Option(1),
    lr: float = typer.Option(1e-2),
    weight_decay: float = typer.Option(1e-1),
    lr_decay: float = typer.Option(0.96),
    data: Optional[Path] = typer.Option(None, help="The shared data folder (default: see cosynth.config)."),
    max_train: Optional[int] = typer.Option(None, help="Subsample the training split to N rows."),
) -> None:
    """COSNet Table 1 for one dataset: every mode over seeds; prints test MAE mean ± std."""
    from cosynth.experiments.cosnet import run_table1, summarize_table1
    from cosynth.training.bimodal import FitConfig

    cfg = FitConfig(epochs=epochs, threads=threads, lr=lr, weight_decay=weight_decay, lr_decay=lr_decay)
    try:
        df = run_table1(dataset, out / dataset, modes=modes.split(","), seeds=_seeds(seeds), config=cfg,
                        data_root=data, max_train=max_train)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    typer.echo(df.filter(regex="mode|seed|best_epoch|test_mae_(all|with|without)").to_string())
    typer.echo("\ntest MAE, mean ± std over seeds:")
    typer.echo(summarize_table1(df).round(4).to_string(index=False))


def cosnet_mp(
    sizes: str = typer.Option("1000,3000,all", help="Training-set sizes of the learning curve (all = every row)."),
    seeds: str = typer.Option("0", help="Seeds: 0-4 or 0,2,5."),
    models: str = typer.Option("cgcnn,roost", help="cgcnn (structure only) and/or roost (composition only)."),
    epochs: int = typer.Option(40),
    weight_decay: float = typer.Option(1e-4),
    fractions: str = typer.Option("", help="Structure fractions for the fraction study, e.g. 0,0.5,1 (empty: none)."),
    fraction_seeds: str = typer.Option("0"),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Report folder (default reports/cosnet/mp_formation_energy)."),
    runs: Optional[Path] = typer.Option(None, help="Run folder (default runs/cosnet/mp_formation_energy_pooled)."),
    data: Optional[Path] = typer.Option(None, help="The shared data folder (default: see cosynth.config)."),
    max_rows: Optional[int] = typer.Option(None, help="Use at most N rows before the split (quick runs)."),
) -> None:
    """de-CGCNN learning curve on MP formation energies (against the CGCNN paper) and, optionally, the
    structure-fraction study on the same rows; writes a Markdown + JSON report with figures."""
    from cosynth.experiments.cosnet import reproduce_mp

    try:
        size_list = [None if s.strip() == "all" else int(s) for s in sizes.split(",")]
        frac_list = [float(f) for f in fractions.split(",")] if fractions.strip() else []
    except ValueError:
        fail(f"--sizes takes integers or 'all', --fractions numbers; got {sizes!r}, {fractions!r}")
    try:
        res = reproduce_mp(out=out, runs=runs, sizes=size_list, seeds=_seeds(seeds), models=models.split(","),
                           epochs=epochs, weight_decay=weight_decay, fractions=frac_list,
                           fraction_seeds=_seeds(fraction_seeds), max_rows=max_rows, data_root=data)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    import pandas as pd

    typer.echo(pd.DataFrame(res["learning_curve"]).to_string(index=False))
    typer.echo(f"wrote {out or 'reports/cosnet/mp_formation_energy'}/report.md "
               f"({res['wall_seconds_this_command'] / 60:.1f} min)")


def sweep(
    dataset: str = typer.Option("band_gap"),
    grid: str = typer.Option("paper", help='"paper" or a JSON file {"param": [values]}.'),
    out: Path = typer.Option(Path("runs/cosnet-sweep"), "--output", "-o"),
    seeds: int = typer.Option(1, help="Seeds 0..N-1 per trial."),
    workers: int = typer.Option(1, help="Trials run at once."),
    epochs: int = typer.Option(200),
    max_train: Optional[int] = typer.Option(None),
    backend: str = typer.Option("local", help="local (processes) or ray (Ray Tune)."),
) -> None:
    """Hyper-parameter sweep of COSNet on one dataset; prints the best trial by validation MAE."""
    from cosynth.experiments.cosnet import load_splits, subsample
    from cosynth.sweeps.runner import best_trial, load_grid, run_sweep
    from cosynth.training.bimodal import FitConfig

    if backend not in ("local", "ray"):
        fail(f"--backend must be local or ray, not {backend!r}")
    if workers < 1 or seeds < 1:
        fail("--workers and --seeds must be at least 1")
    try:
        splits = subsample(load_splits(dataset), max_train)
        df = run_sweep(splits, load_grid(grid), out / dataset, base=FitConfig(epochs=epochs, threads=1),
                       seeds=range(seeds), workers=workers, backend=backend)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    typer.echo(best_trial(df).to_string())


def probe(
    table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Labelled table with a split column."),
    model: List[str] = typer.Option(..., "--model", "-m",
                                    help="random | NAME=weights.h5 | NAME=model.pt | a bundled model name (repeatable)."),
    label: str = typer.Option("label"),
    split_column: str = typer.Option("split"),
    id_column: Optional[str] = typer.Option(None),
    structure_column: Optional[str] = typer.Option(None),
    rotations: int = typer.Option(3, help="Rotations per crystal; features are averaged over them."),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result as JSON here."),
) -> None:
    """Linear probe of frozen convolutions: does a voxel CNN's feature space carry the label?"""
    import pandas as pd

    from cosynth.experiments.feature_probe import named_model
    from cosynth.experiments.feature_probe import probe as run_probe
    from cosynth.io.files import atomic_write_json

    try:
        models = dict(named_model(spec, seed) for spec in model)
        result = run_probe(table, models, label=label, split_column=split_column, id_column=id_column,
                           structure_column=structure_column, rotations=rotations, seed=seed)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    result.update(table=str(table), models=list(model))
    typer.echo(pd.DataFrame(result["rows"]).to_string(index=False))
    if out:
        atomic_write_json(out, result)


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    reproduce_app.command("cosnet-table1")(cosnet_table1)
    reproduce_app.command("cosnet-mp")(cosnet_mp)
    app.command()(sweep)
    app.command()(probe)
