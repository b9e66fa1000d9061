"""`python -m cosynth.cli` runs the `cosynth` command."""

from cosynth.cli import app

app(prog_name="cosynth")
