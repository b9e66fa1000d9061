"""cosynth: machine learning on crystals that materials scientists can trust."""
__version__ = "0.1.0"
