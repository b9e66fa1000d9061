"""`cosynth` commands for the data domain (see cosynth.commands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    """Add this group's commands to the CLI."""
