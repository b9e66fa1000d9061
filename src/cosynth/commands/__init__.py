"""Command groups of the `cosynth` CLI, each in the module of its domain.

Every module here defines `register(app, train_app, reproduce_app)`, which adds its commands;
`cosynth.cli` calls them all. Commands import their heavy dependencies lazily so that
`cosynth --help` stays fast.
"""

GROUPS = ("cosynth.commands.data", "cosynth.commands.trust", "cosynth.commands.cosnet")
