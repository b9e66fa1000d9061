"""What every `cosynth` command shares: the error helper and table output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn, Optional

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad usage or input)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def check_output(path: Optional[Path], what: str = "--output") -> None:
    """Refuse an output table path that cannot be written before any work is done."""
    if path is None:
        return
    from cosynth.io.files import check_table_path

    try:
        check_table_path(path)
    except ValueError as err:
        fail(f"{what}: {err}")


def show(df, out: Optional[Path]) -> None:
    """Write ``df`` to ``out``; without one, a table on a terminal or CSV on a pipe."""
    from cosynth.io.files import write_table

    if out is not None:
        write_table(df, out)
        typer.echo(f"wrote {len(df)} rows to {out}", err=True)
    elif sys.stdout.isatty():
        print_table(df)
    else:
        df.to_csv(sys.stdout, index=False)


def print_table(df) -> None:
    """A rich table of ``df`` (floats to 4 decimals, missing values blank)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in df.columns:
        table.add_column(str(col), overflow="fold", max_width=60 if col in ("error", "source") else None)
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.4f}")
            else:
                cells.append("" if v is None or str(v) in ("<NA>", "None", "nan") else str(v))
        table.add_row(*cells)
    Console(width=max(120, Console().width)).print(table)
