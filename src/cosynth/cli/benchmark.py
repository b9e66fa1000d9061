"""`cosynth benchmark synth`: the synthesizability benchmark with its shortcut baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cosynth.cli.common import fail


def synth(
    out: Optional[Path] = typer.Option(None, "--output", "-o",
                                       help="Report folder (default reports/synth-benchmark[-quick])."),
    work: Optional[Path] = typer.Option(None, help="Work folder: table, runs, scores (re-running resumes)."),
    data: Optional[Path] = typer.Option(None, help="The shared data folder (default: see cosynth.config)."),
    xiespp_weights: Optional[Path] = typer.Option(
        None, help="Published XIE-SPP weights0500.h5 for their baseline row (default: shared/reference/xiespp)."),
    quick: bool = typer.Option(False, "--quick", help="A smoke test on a small subset (minutes)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of every graph model (default 20, COSNet 40; quick 2)."),
    composition_rows: Optional[int] = typer.Option(None, help="Composition-only training rows (default 20000)."),
    voxel_epochs: Optional[int] = typer.Option(None, help="Epochs of the voxel candidate (0: none)."),
    voxel_max_minutes: Optional[float] = typer.Option(None, help="Time cap of the voxel training (resume later)."),
    install: bool = typer.Option(False, "--install", help="Ship the winner as the default model of cosynth predict."),
    reuse_scores: bool = typer.Option(
        False, "--reuse-scores", help="Start a new work folder from the scores the report folder kept (same split and "
        "settings): only candidates new since that run train."),
) -> None:
    """Every labelled MP structure, one frozen split, baselines and candidates in one test table."""
    from dataclasses import replace

    from cosynth.config import data_root
    from cosynth.experiments.synth_benchmark import BenchmarkConfig, benchmark_synth

    config = BenchmarkConfig.quick_run() if quick else BenchmarkConfig()
    overrides = {k: v for k, v in {"epochs": epochs, "composition_rows": composition_rows,
                                   "voxel_epochs": voxel_epochs, "voxel_max_minutes": voxel_max_minutes}.items()
                 if v is not None}
    if epochs is not None:  # the same for every graph model
        overrides["candidate_epochs"] = {}
    config = replace(config, **overrides)
    try:
        root = data_root(data)
        weights = xiespp_weights or root.parent / "reference" / "xiespp" / "weights0500.h5"
        out = out or Path("reports/synth-benchmark-quick" if quick else "reports/synth-benchmark")
        result = benchmark_synth(out, work=work, data_root=root, config=config, xiespp_weights=weights,
                                 install=install, reuse_scores=reuse_scores, progress=True)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    typer.echo(f"wrote {out}/README.md and benchmark.json; chosen: {result['winner']}")


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks with shortcut baselines.")
    bench_app.command("synth")(synth)
    app.add_typer(bench_app, name="benchmark")
