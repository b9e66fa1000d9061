"""`cosynth audit | evaluate | stress | mitigate | report`: is the data biased, does the model
rely on the bias, and how to fix the data (see cosynth.audit, cosynth.evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


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
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: audit.json, audit.html, figures/."),
    ) -> None:
        """Is the data biased? Class/source distributions of descriptors and shortcut scores."""
        from cosynth.audit.audit import audit_table, verdict_table

        if not table.exists():
            _fail(f"{table}: no such file")
        try:
            result = audit_table(table, label, source=source, descriptors=_names(descriptors), group=group,
                                 folds=folds, seed=seed, out_dir=out, title=f"Data audit: {table.name}")
        except ValueError as err:
            _fail(str(err))
        vt = verdict_table(result)
        typer.echo(vt.drop(columns=["reasons"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        v = result["verdict"]
        typer.echo(f"flagged: {', '.join(v['flagged']) or 'none'}; all descriptors AUC {v['all_descriptors_auc']:.3f}"
                   + ("; label depends on source" if v["source_confound"] else ""))
        typer.echo(f"wrote {out / 'audit.json'} and {out / 'audit.html'}", err=True)

    @app.command()
    def report(
        dirs: List[Path] = typer.Argument(..., help="Output folders of audit/evaluate/stress (or HTML pages)."),
        out: Path = typer.Option(Path("report.html"), "--out", "-o", help="Combined HTML page."),
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
                    _fail(f"{d}: no HTML page in it")
                pages.extend(found)
            else:
                _fail(f"{d}: no such file or folder")
        try:
            combine(pages, out, title=title)
        except ValueError as err:
            _fail(str(err))
        typer.echo(f"wrote {out} ({len(pages)} pages)", err=True)
