"""`cosynth` commands for the cosnet domain: train roost|cgcnn|cosnet, reproduce cosnet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cosynth.cli.common import fail
from cosynth.cli.train import DEVICES_HELP, STRATEGY_HELP


def _splits(data: Optional[Path], dataset: Optional[str], table: Optional[Path], split_column: str,
            id_column: str, formula_column: str, cif_column: Optional[str], target: str):
    """Train/val/test frames from a COSNet dataset name or a table with a split column."""
    if dataset:
        from cosynth.config import data_root
        from cosynth.data.cosnet_splits import load_cosnet_split

        return load_cosnet_split(data_root(data), dataset)
    if table is None:
        fail("give --dataset NAME or a TABLE with a split column")
    import pandas as pd

    from cosynth.io.files import read_table

    df = read_table(table)
    for col in (split_column, id_column, formula_column, target):
        if col not in df.columns:
            fail(f"column {col!r} not in {table} (columns: {', '.join(map(str, df.columns))})")
    cif = df[cif_column] if cif_column and cif_column in df.columns else None
    if cif is not None:  # a column of paths is read as files
        cif = [Path(c).read_text() if isinstance(c, str) and not c.lstrip().startswith(("data_", "#")) and Path(c).is_file()
               else (c if isinstance(c, str) and c.strip() else None) for c in cif]
    frame = pd.DataFrame({"id": df[id_column].astype(str), "formula": df[formula_column].astype(str),
                          "cif": cif if cif is not None else None,
                          "target": pd.to_numeric(df[target], errors="coerce"), "split": df[split_column].astype(str)})
    frame["structure_status"] = ["ok" if isinstance(c, str) else "none" for c in frame["cif"]]
    out = {k: frame[frame["split"] == k].drop(columns="split").reset_index(drop=True) for k in ("train", "val", "test")}
    empty = [k for k, v in out.items() if not len(v)]
    if empty:
        fail(f"no rows with {split_column} = {', '.join(empty)} (values must be train/val/test)")
    return out


def _train(family: str, **kw) -> None:
    from cosynth.training.bimodal import FitConfig, fit_seeds
    from cosynth.training.parallel import check_parallel

    try:
        check_parallel(kw["devices"], kw["strategy"])  # before any data is read
        splits = _splits(kw.pop("data"), kw.pop("dataset"), kw.pop("table"), kw.pop("split_column"),
                         kw.pop("id_column"), kw.pop("formula_column"), kw.pop("cif_column"), kw.pop("target"))
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    out, seeds = kw.pop("out"), kw.pop("seeds")
    try:
        config = FitConfig(model=family, **kw)
        config.check()
        df = fit_seeds(splits, out, config, seeds=range(seeds), progress=False, verbose=True)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if df is None:
        return  # an extra DDP process: rank 0 reports
    typer.echo(json.dumps(df.filter(regex="seed|test_mae_(all|with|without)|accuracy|auc|best_epoch").to_dict(orient="records"),
                          indent=2))


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    """Add this group's commands to the CLI."""

    def make(family: str, help_text: str, with_mode: bool):
        def command(
            table: Optional[Path] = typer.Argument(None, help="Table with id, formula, optional CIF, target and split (train/val/test) columns."),
            dataset: Optional[str] = typer.Option(None, help="A COSNet dataset instead: band_gap, refractive_index, rdielectric_constant, li_conductivity."),
            data: Optional[Path] = typer.Option(None, help="The shared data folder (default ../shared/data)."),
            out: Path = typer.Option(..., "--output", "-o", help="Run directory (one seed<k> subfolder per seed; re-running resumes)."),
            target: str = typer.Option("target", help="Target column."),
            id_column: str = typer.Option("id"), formula_column: str = typer.Option("formula"),
            cif_column: Optional[str] = typer.Option("cif", help="CIF text or path column (empty = no structure)."),
            split_column: str = typer.Option("split"),
            mode: str = typer.Option("bimodal_aug", help="composition | bimodal | bimodal_aug (COSNet only)."),
            task: str = typer.Option("regression", help="regression or classification (0/1 target)."),
            epochs: int = typer.Option(200), seeds: int = typer.Option(1, help="Repeat over seeds 0..N-1."),
            lr: float = typer.Option(1e-2), weight_decay: float = typer.Option(1e-1), lr_decay: float = typer.Option(0.96),
            batch_size: int = typer.Option(128, "--batch-size"),
            embedding: str = typer.Option("matscholar200", help="elementembeddings name: matscholar200, megnet16, magpie, mat2vec, oliynyk, skipatom."),
            concat: bool = typer.Option(False, "--concat/--sum", help="Fuse by concatenation instead of a sum."),
            vector_weight: bool = typer.Option(False, "--vector-weight/--scalar-weight"),
            threads: Optional[int] = typer.Option(None, help="torch threads."),
            max_minutes: Optional[float] = typer.Option(None, help="Stop after this wall time per run (resume later)."),
            devices: int = typer.Option(1, help=DEVICES_HELP),
            strategy: str = typer.Option("auto", help=STRATEGY_HELP),
        ) -> None:
            _train(family, table=table, dataset=dataset, data=data, out=out, target=target, id_column=id_column,
                   formula_column=formula_column, cif_column=cif_column, split_column=split_column,
                   mode=mode if with_mode else "composition" if family == "roost" else "bimodal", task=task,
                   epochs=epochs, seeds=seeds, lr=lr, weight_decay=weight_decay, lr_decay=lr_decay,
                   batch_size=batch_size, embedding=embedding, concat=concat, scalar_weight=not vector_weight,
                   threads=threads, max_minutes=max_minutes, devices=devices, strategy=strategy)

        command.__doc__ = help_text
        return command

    train_app.command("roost")(make("roost", "Train Roost (composition only) on a table or a COSNet dataset.", False))
    train_app.command("cgcnn")(make("cgcnn", "Train de-CGCNN (structure only; rows without a structure are skipped).", False))
    train_app.command("cosnet")(make("cosnet", "Train COSNet (composition + optional structure, modal-availability augmentation).", True))

    @reproduce_app.command("cosnet")
    def reproduce_cosnet(
        dataset: str = typer.Option("band_gap", help="band_gap | refractive_index | rdielectric_constant | li_conductivity"),
        quick: bool = typer.Option(False, "--quick", help="Small subsets, 2 epochs, 2 seeds: a smoke test in minutes."),
        out: Optional[Path] = typer.Option(None, "--output", "-o", help="Report folder (default reports/cosnet/DATASET)."),
        runs: Optional[Path] = typer.Option(None, help="Run folder (default runs/cosnet; finished runs are reused)."),
        seeds: Optional[int] = typer.Option(None, help="Seeds 0..N-1 (default 5; quick 2)."),
        epochs: Optional[int] = typer.Option(None, help="Epochs per run (default 60; quick 2)."),
        weight_decay: Optional[float] = typer.Option(None, help="Default 1e-4 (from the paper's grid, see the report)."),
        fraction_study: bool = typer.Option(True, "--fraction-study/--no-fraction-study",
                                            help="Also run test MAE vs structure fraction on MP formation energies."),
        train: bool = typer.Option(True, "--train/--no-train",
                                   help="--no-train reports the finished Table-1 runs only and lists the rest."),
    ) -> None:
        """Reproduce the COSNet paper's Table 1/2 analyses and write a Markdown + JSON report with figures."""
        from cosynth.experiments.cosnet import reproduce

        try:
            res = reproduce(dataset, quick=quick, out=out, runs=runs, seeds=seeds, epochs=epochs,
                            weight_decay=weight_decay, fraction_study=fraction_study, train=train)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        out_dir = out or Path("reports/cosnet-quick" if quick else "reports/cosnet") / dataset
        typer.echo(f"wrote {out_dir}/report.md, report.json and {len(res['figures'])} figures "
                   f"({res['wall_seconds_this_command'] / 60:.1f} min)")
