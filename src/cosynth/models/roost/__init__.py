"""Roost: composition-only property model (Goodall & Lee 2020)."""

from cosynth.models.roost.model import Roost, RoostEncoder

__all__ = ["Roost", "RoostEncoder"]
