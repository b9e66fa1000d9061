"""Scale-out: ``cosynth screen`` on Ray Data (an optional extra, ``cosynth[ray]``; Ray is imported lazily)."""

from cosynth.scale.screen import ScreenOptions, ScreenSummary, read_screen, screen

__all__ = ["ScreenOptions", "ScreenSummary", "read_screen", "screen"]
