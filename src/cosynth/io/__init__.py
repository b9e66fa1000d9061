"""Crystal input: files, folders, globs, tables and in-memory objects to validated Structures.

Every crystal becomes a :class:`CrystalRecord`; bad input becomes a record with
``status="error"`` and a specific message instead of stopping the batch.
"""

from cosynth.io.crystals import MAX_TEXT_BYTES, CrystalRecord, iter_crystals, read_crystals, to_structure
from cosynth.io.errors import describe_error, is_bare
from cosynth.io.validate import (
    MAX_ATOMS,
    MAX_CELL_LENGTH,
    MAX_EXTENT,
    MEMORY_BUDGET,
    MIN_DISTANCE,
    CrystalValidationError,
    check_bounds,
    check_tiling_budget,
    validate_structure,
)

__all__ = [
    "MAX_ATOMS",
    "MAX_CELL_LENGTH",
    "MAX_EXTENT",
    "MAX_TEXT_BYTES",
    "MEMORY_BUDGET",
    "MIN_DISTANCE",
    "CrystalRecord",
    "CrystalValidationError",
    "check_bounds",
    "check_tiling_budget",
    "describe_error",
    "is_bare",
    "iter_crystals",
    "read_crystals",
    "to_structure",
    "validate_structure",
]
