"""`cosynth` command line: each command is a thin layer over the Python function of that name.

One typer app; each module of this package adds its commands through ``register(app, train_app,
reproduce_app)``. Commands import their heavy dependencies lazily so that ``cosynth --help``
stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Machine learning on crystals you can trust: synthesizability from structure.")
train_app = typer.Typer(no_args_is_help=True, help="Train models.")
app.add_typer(train_app, name="train")
reproduce_app = typer.Typer(no_args_is_help=True, help="Reproduce the source papers' studies end to end.")
app.add_typer(reproduce_app, name="reproduce")

MODULES = ("predict", "screen", "models", "train", "data", "trust", "cosnet", "experiments", "benchmark")
for _name in MODULES:
    importlib.import_module(f"cosynth.cli.{_name}").register(app, train_app, reproduce_app)


def main() -> None:  # pragma: no cover
    app()

