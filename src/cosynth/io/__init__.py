"""Crystal input: files, folders, globs, tables and in-memory objects to validated Structures.

Every crystal becomes a :class:`CrystalRecord`; bad input becomes a record with
``status="error"`` and a specific message instead of stopping the batch.
"""

from cosynth.io.crystals import CrystalRecord, iter_crystals, read_crystals, to_structure
from cosynth.io.validate import MAX_EXTENT, MIN_DISTANCE, CrystalValidationError, validate_structure

__all__ = [
    "MAX_EXTENT",
    "MIN_DISTANCE",
    "CrystalRecord",
    "CrystalValidationError",
    "iter_crystals",
    "read_crystals",
    "to_structure",
    "validate_structure",
]
