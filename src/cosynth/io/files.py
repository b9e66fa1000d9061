"""Tables and files on disk: one table reader, one table writer, one atomic write.

Every output of cosynth goes through :func:`atomic_write`, so a crash or Ctrl-C never leaves a
half-written file under the final name, and the file gets the mode the user's umask asks for
(``tempfile.mkstemp`` alone would leave every report readable by its owner only).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["TABLE_SUFFIXES", "atomic_write", "atomic_write_json", "atomic_write_text", "check_table_path",
           "read_table", "table_kind", "write_table"]

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".json", ".jsonl", ".ndjson")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    Args:
        path: final file path; its folder is created if needed.
        write: writes the whole content to the path it is given.

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; returns the path."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically, with NaN and infinities as null (strict readers reject them)."""
    return atomic_write_text(path, json.dumps(_json_clean(data), indent=2, default=str) + "\n")


def _json_clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        try:
            return _json_clean(x.item())
        except (ValueError, AttributeError):
            return x.tolist() if hasattr(x, "tolist") else x
    return x


def table_kind(path) -> str:
    """``csv``, ``parquet`` or ``jsonl`` from a table file's extension; raises ValueError otherwise."""
    name = Path(path).name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".json", ".jsonl", ".ndjson", ".jsonl.gz")):
        return "jsonl"
    raise ValueError(f"unsupported table format {Path(path).name!r}: use .csv, .csv.gz, .parquet or .jsonl/.json "
                     "(JSON lines)")


def check_table_path(path) -> Path:
    """Fail early, before any work, when ``path`` cannot take a table (bad extension or a folder)."""
    path = Path(path)
    table_kind(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name ending in .csv, .parquet or .json")
    return path


def read_table(path, *, text_columns: tuple[str, ...] | None = None, **csv_options: Any) -> pd.DataFrame:
    """A table file as a DataFrame, format from the extension (.csv[.gz], .parquet, .jsonl/.json).

    Args:
        path: the table file.
        text_columns: CSV columns read as strings (ids such as ``001`` keep their zeros); all
            columns are typed by pandas when None is given.
        **csv_options: passed to :func:`pandas.read_csv` (``dtype``, ``usecols`` …).

    Returns:
        The frame. Empty cells are missing values, but the text ``NaN`` stays text: it is sodium
        nitride's formula.
    """
    path = Path(path)
    kind = table_kind(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    if text_columns is not None:
        header = pd.read_csv(path, nrows=0).columns.tolist()
        csv_options["dtype"] = {c: str for c in header if c in text_columns}
    return pd.read_csv(path, keep_default_na=False, na_values=[""], **csv_options)


def write_table(df: pd.DataFrame, path) -> Path:
    """Write ``df`` atomically, format from the extension (.csv[.gz], .parquet, .json/.jsonl = JSON lines)."""
    path = Path(path)
    kind = table_kind(path)

    def write(tmp: Path) -> None:
        if kind == "parquet":
            df.to_parquet(tmp, index=False)
        elif kind == "csv":
            df.to_csv(tmp, index=False, compression="gzip" if path.name.lower().endswith(".gz") else None)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False, double_precision=15)

    return atomic_write(path, write)
