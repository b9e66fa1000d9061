"""`cosynth audit | evaluate | stress | mitigate | report`: is the data biased, does the model
rely on the bias, and how to fix the data (see cosynth.audit, cosynth.evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cosynth.cli.common import fail
from cosynth.config import DEFAULT_MODEL


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    """Add this group's commands to the CLI."""

    @app.command()
    def audit(
        table: Path = typer.Argument(..., help="Crystal table (parquet/csv/jsonl) with a label column."),
        label: str = typer.Option(..., "--label", "-l", help="Binary label column (1 = positive)."),
        source: Optional[str] = typer.Option(None, "--source", "-s", help="Column naming each row's data source."),
        descriptors: Optional[str] = typer.Option(
            None, "--descriptors", "-d",
            help="Comma-separated descriptor names or numeric table columns (default: all that apply)."),
        group: Optional[str] = typer.Option(None, help="Column whose groups CV folds never split (e.g. formula)."),
        folds: int = typer.Option(5, help="Cross-validation folds of the shortcut score."),
        seed: int = typer.Option(0, help="Seed of the CV folds."),
        positive: str = typer.Option("1", help="The label value that counts as positive (e.g. icsd)."),
        out: Path = typer.Option(..., "--output", "-o", help="Output folder: audit.json, audit.html, figures/."),
    ) -> None:
        """Is the data biased? Class/source distributions of descriptors and shortcut scores."""
        from cosynth.audit.audit import audit_table, verdict_table

        if not table.exists():
            fail(f"{table}: no such file")
        try:
            result = audit_table(table, label, source=source, descriptors=_names(descriptors), group=group,
                                 folds=folds, seed=seed, out_dir=out, title=f"Data audit: {table.name}",
                                 positive=int(positive) if positive.lstrip("-").isdigit() else positive, progress=True)
        except ValueError as err:
            fail(str(err))
        vt = verdict_table(result)
        typer.echo(vt.drop(columns=["reasons"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        v = result["verdict"]
        typer.echo(f"flagged: {', '.join(v['flagged']) or 'none'}; all descriptors AUC {v['all_descriptors_auc']:.3f}"
                   + ("; label depends on source" if v["source_confound"] else ""))
        typer.echo(f"wrote {out / 'audit.json'} and {out / 'audit.html'}", err=True)

    @app.command()
    def report(
        dirs: List[Path] = typer.Argument(..., help="Output folders of audit/evaluate/stress (or HTML pages)."),
        out: Path = typer.Option(Path("report.html"), "--output", "-o", help="Combined HTML page."),
        title: str = typer.Option("cosynth report", help="Page title."),
    ) -> None:
        """Combine the HTML pages of several commands into one self-contained page."""
        from cosynth.report.html import combine

        pages: list[Path] = []
        for d in dirs:
            if d.is_file():
                pages.append(d)
            elif d.is_dir():
                found = sorted(p for p in d.glob("*.html") if p.resolve() != out.resolve())
                if not found:
                    fail(f"{d}: no HTML page in it")
                pages.extend(found)
            else:
                fail(f"{d}: no such file or folder")
        try:
            combine(pages, out, title=title)
        except ValueError as err:
            fail(str(err))
        typer.echo(f"wrote {out} ({len(pages)} pages)", err=True)

    register_evaluation(app)
    register_bias_study(reproduce_app)

    @app.command()
    def baselines(
        table: Path = typer.Argument(..., help="Crystal table with a split column (test rows: split == test)."),
        label: str = typer.Option("label", "--label", "-l", help="Binary label column (1 = positive)."),
        out: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the rows as JSON here."),
    ) -> None:
        """How much signal the labels carry without a model of ours: ROC AUC on the test rows of reference
        scores (energy above hull, CLscore, density), of the origin alone and of trees on simple structure descriptors."""
        import pandas as pd

        from cosynth.audit.baselines import label_signal

        if not table.exists():
            fail(f"{table}: no such file")
        try:
            rows = label_signal(table, label=label)
        except (KeyError, ValueError) as err:
            fail(str(err))
        typer.echo(pd.DataFrame(rows)[["score", "test_rows", "roc_auc"]].to_string(index=False))
        if out is not None:
            from cosynth.io.files import atomic_write_json

            atomic_write_json(out, {"table": str(table), "label": label, "baselines": rows})
            typer.echo(f"wrote {out}", err=True)

    @app.command()
    def mitigate(
        table: Path = typer.Argument(..., help="Labelled crystal table."),
        label: str = typer.Option(..., "--label", "-l"),
        method: str = typer.Option(..., help="reweight (adds a weight column), match (matched subsample) or "
                                              "normalize-volume (rescale generated structures)."),
        descriptor: str = typer.Option("density", "--descriptor", "-d", help="Descriptor to equalise (reweight/match)."),
        bins: int = typer.Option(20, help="Quantile bins of the descriptor."),
        seed: int = typer.Option(0),
        fix: Optional[str] = typer.Option(None, help="normalize-volume: rows to rescale as COLUMN=VALUE "
                                                     "(default: the negatives)."),
        out: Path = typer.Option(..., "--output", "-o", help="Output table (.parquet/.csv/.jsonl)."),
    ) -> None:
        """Reduce a dataset bias; re-run `cosynth audit` on the output to see the effect."""
        import json

        from cosynth.audit.mitigation import mitigate_table
        from cosynth.data.table import read_table

        if not table.exists():
            fail(f"{table}: no such file")
        fix_source = None
        if fix:
            if "=" not in fix:
                fail("--fix must look like COLUMN=VALUE, e.g. source=generated")
            fix_source = tuple(fix.split("=", 1))
        try:
            new, summary = mitigate_table(read_table(table), label, method, descriptor=descriptor, bins=bins,
                                          seed=seed, fix_source=fix_source)
        except ValueError as err:
            fail(str(err))
        new.write(out)
        typer.echo(json.dumps(summary, indent=2, default=str))
        typer.echo(f"wrote {out}; check it with: cosynth audit {out} --label {label} -o <dir>", err=True)


def _named(items: list[str]) -> dict:
    """'name=path' or 'path' (named by its file stem) → {name: path}."""
    out = {}
    for item in items:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        name = name or Path(path).stem.replace(".card", "")
        if name in out:
            fail(f"two inputs are named {name!r}; use name=path")
        out[name] = path
    return out


def _factors(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        fail(f"--factors must be comma-separated numbers, not {text!r}")
    if not values or any(v <= 0 for v in values):
        fail("--factors must be positive volume factors")
    return values


def register_evaluation(app: typer.Typer) -> None:
    stress_app = typer.Typer(no_args_is_help=True,
                             help="Stress tests: cross-evaluation, volume sweep, ensemble-size consistency.")
    app.add_typer(stress_app, name="stress")

    @app.command()
    def evaluate(
        table: Path = typer.Argument(..., help="Labelled crystal table."),
        label: str = typer.Option(..., "--label", "-l", help="Label (or regression target) column."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Voxel model (bundled name or file)."),
        score: Optional[str] = typer.Option(None, help="Evaluate this existing column of scores instead of a model."),
        ensemble: int = typer.Option(20, "--ensemble", "-E", help="Rotations per crystal."),
        seed: int = typer.Option(0),
        threshold: float = typer.Option(0.5),
        run: Optional[Path] = typer.Option(None, help="Training run folder (learning curves from history.csv)."),
        workers: int = typer.Option(1, help="Processes building images."),
        out: Path = typer.Option(..., "--output", "-o", help="Output folder."),
    ) -> None:
        """Metrics, ROC, likelihood histograms and learning curves of a model on a labelled table."""
        from cosynth.evaluate.evaluate import evaluate_model, evaluate_scores, write_evaluation

        if (model is None) == (score is None):
            fail("give exactly one of --model or --score")
        if not table.exists():
            fail(f"{table}: no such file")
        try:
            if model is not None:
                result = evaluate_model(model, table, label, ensemble=ensemble, seed=seed, threshold=threshold,
                                        run_dir=run, out_dir=out, workers=workers, progress=True,
                                        title=f"Evaluation of {model} on {table.name}")
            else:
                from cosynth.data.table import read_table

                frame = read_table(table).frame
                for col in (label, score):
                    if col not in frame.columns:
                        fail(f"no column {col!r} in {table}")
                result = evaluate_scores(frame[label], frame[score], threshold=threshold)
                import pandas as pd

                hist = pd.read_csv(run / "history.csv") if run and (run / "history.csv").exists() else None
                write_evaluation(result, frame, label, out, history=hist, score_column=score,
                                 title=f"Evaluation of {score} on {table.name}")
        except ValueError as err:
            fail(str(err))
        m = result["metrics"]
        typer.echo("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in m.items() if not isinstance(v, dict)))
        typer.echo(f"wrote {out / 'evaluate.json'} and {out / 'evaluate.html'}", err=True)

    @stress_app.command("cross")
    def stress_cross(
        tables: List[str] = typer.Argument(..., help="Labelled test tables ([name=]path)."),
        model: List[str] = typer.Option(..., "--model", "-m", help="Models ([name=]bundled name or file); repeat."),
        label: str = typer.Option(..., "--label", "-l"),
        ensemble: int = typer.Option(20, "--ensemble", "-E"),
        seed: int = typer.Option(0),
        threshold: float = typer.Option(0.5),
        workers: int = typer.Option(1),
        out: Path = typer.Option(..., "--output", "-o"),
    ) -> None:
        """Every model on every test table: the metrics matrix (the paper's swapped test sets)."""
        from cosynth.evaluate.stress import cross_evaluate, write_cross

        try:
            df = cross_evaluate(_named(model), _named(tables), label, ensemble=ensemble, seed=seed,
                                threshold=threshold, out_dir=out, workers=workers)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        write_cross(df, out)
        typer.echo(df.drop(columns=["tp", "fp", "tn", "fn"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    @stress_app.command("volume")
    def stress_volume(
        table: Path = typer.Argument(..., help="Labelled table of structures."),
        model: List[str] = typer.Option(..., "--model", "-m", help="Models ([name=]bundled name or file); repeat."),
        label: str = typer.Option(..., "--label", "-l"),
        factors: str = typer.Option("0.45,0.6,0.8,0.9,1.0,1.1,1.3", help="Volume factors (0.45 = 55 % compression)."),
        ensemble: int = typer.Option(20, "--ensemble", "-E"),
        seed: int = typer.Option(0),
        threshold: float = typer.Option(0.5),
        workers: int = typer.Option(1),
        out: Path = typer.Option(..., "--output", "-o"),
    ) -> None:
        """Scale every structure's volume, predict again, and plot metrics and likelihood per factor."""
        from cosynth.evaluate.stress import volume_sweep, write_sweep

        try:
            df, dens = volume_sweep(_named(model), table, label, factors=_factors(factors), ensemble=ensemble,
                                    seed=seed, threshold=threshold, out_dir=out, workers=workers)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        write_sweep(df, dens, out)
        typer.echo(df.drop(columns=["tp", "fp", "tn", "fn"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    @stress_app.command("ensemble")
    def stress_ensemble(
        table: Path = typer.Argument(..., help="Table of structures (e.g. a test set)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
        sizes: str = typer.Option("1,2,5,10,20,30,50,75,100,150,200", help="Ensemble sizes E."),
        repeats: int = typer.Option(10, "--repeats", "-R", help="Repeated ensembles per size (R ≥ 2)."),
        mode: str = typer.Option("pool", help="pool (bootstrap from one pool per crystal) or fresh (E·R new rotations)."),
        pool_size: int = typer.Option(200, help="Rotations per crystal in the pool mode."),
        samplers: str = typer.Option("haar", help="Comma-separated samplers (fresh mode): haar,sobol."),
        seed: int = typer.Option(0),
        threshold: float = typer.Option(0.5),
        limit: Optional[int] = typer.Option(None, help="Only the first N crystals (the study costs E·R images each)."),
        out: Path = typer.Option(..., "--output", "-o"),
    ) -> None:
        """How many rotations does a stable prediction need? Consistency per ensemble size (paper Table I)."""
        from cosynth.data.table import read_table
        from cosynth.evaluate.ensemble import ensemble_study, write_study
        from cosynth.models.registry import load_model

        try:
            tab = read_table(table)
            loaded = load_model(model)
            net, meta = loaded.network, loaded.meta
            keep = [i for i, s in enumerate(tab.structures()) if s is not None][: limit or None]
            result = ensemble_study(net, [tab.structures()[i] for i in keep],
                                    tab.frame["id"].astype(str).iloc[keep].tolist(),
                                    sizes=[int(s) for s in sizes.split(",")], repeats=repeats, seed=seed,
                                    threshold=threshold, mode=mode, pool_size=pool_size,
                                    samplers=tuple(samplers.split(",")), progress=True)
        except ValueError as err:
            fail(str(err))
        result["model"] = str(meta.get("path"))
        write_study(result, out)
        from cosynth.evaluate.ensemble import study_table

        typer.echo(study_table(result).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def register_bias_study(reproduce_app: typer.Typer) -> None:
    @reproduce_app.command("bias-study")
    def bias_study(
        out: Path = typer.Option(Path("reports/bias-study"), "--output", "-o", help="Report folder."),
        quick: bool = typer.Option(False, "--quick", help="Tiny subsets and 2 epochs: checks the pipeline in minutes."),
        work: Optional[Path] = typer.Option(
            None, help="Work folder for tables, models and prediction caches (default runs/bias-study[-quick]); "
                       "re-running resumes from it."),
        data: Optional[Path] = typer.Option(None, help="The shared data folder (default ../shared/data)."),
        epochs: Optional[str] = typer.Option(
            None, help="Epochs for every model (e.g. 50) or per model (e.g. mixed=80,single=60); "
                       "default mixed 40, single 100, mixed-volnorm 40; quick 2."),
        lr: Optional[str] = typer.Option(
            None, "--lr", help="Adam learning rate for every model (e.g. 1e-4) or per model (e.g. mixed=1e-3); "
                               "default mixed 1e-3, single 1e-4, mixed-volnorm 1e-4."),
        max_train_minutes: Optional[float] = typer.Option(
            None, help="Stop each training after this wall time; the next run resumes it."),
        ensemble: Optional[int] = typer.Option(None, help="Rotations per prediction (default 20; quick 2)."),
        workers: Optional[int] = typer.Option(None, help="Prediction worker processes (results do not depend on it)."),
    ) -> None:
        """Reproduce the data-bias study: datasets, audit, three models, swapped/compressed tests, Table I, report."""
        from cosynth.experiments.bias_study import _cli_config, reproduce

        try:
            config = _cli_config(quick, epochs=epochs, lr=lr, max_train_minutes=max_train_minutes, ensemble=ensemble,
                                 workers=workers)
            result = reproduce(out, work=work, data_root=data, config=config)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        for line in result["interpretation"]:
            typer.echo(line)
        total = sum(v["seconds"] for v in result["stage_seconds"].values())
        typer.echo(f"wrote {out}/index.html, README.md and bias_study.json ({total / 60:.1f} min of stages in total)")
