"""The COSNet paper's data splits, joined to the structures available offline.

``load_cosnet_split(root, dataset)`` returns ``{"train", "val", "test"}`` frames with columns
``id``, ``formula``, ``cif`` (CIF text or None), ``target`` and the provenance of the structure
(``structure_ref`` as written in the split file, ``structure_origin``: the data folder of the CIF,
``structure_status``: ``ok`` — CIF found,
``missing`` — the split names a structure that is not available offline (ICSD codes; MP ids
in neither ``mp_synth_structures`` nor ``mp_extra_structures``), ``none`` — composition-only row).

Band gap / refractive index / dielectric constant use the paper's own files. The Li-conductivity
table has no split in the repository; we draw a composition-disjoint 60/20/20 split with a fixed
seed (the band-gap files are 60/20/20 and composition-disjoint too).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.config import MP_TABLE
from cosynth.io.files import read_table

DATASETS = ("band_gap", "refractive_index", "rdielectric_constant", "li_conductivity")
SPLITS = ("train", "val", "test")
LI_SPLIT_SEED = 0
# FitConfig.nonneg per dataset (None: the reference ReLU output whenever every training target is ≥ 0).
# Dielectric constants run 0.05–9,023 with a median near 15: divided by their standard deviation almost
# every target sits near zero, and the ReLU output died at initialisation in 2 of 5 composition-only seeds
# (constant 0 predictions), so that dataset trains without it.
OUTPUT_RELU = {"band_gap": None, "refractive_index": None, "rdielectric_constant": False, "li_conductivity": None}
UNITS = {"band_gap": "eV", "refractive_index": "", "rdielectric_constant": "", "li_conductivity": "log10 S/cm"}


def _data_root(root) -> Path:
    """Accept the shared ``data`` folder or its ``cosnet_splits`` subfolder."""
    root = Path(root)
    if (root / "cosnet_splits").is_dir():
        return root
    if root.name == "cosnet_splits" and root.is_dir():
        return root.parent
    raise FileNotFoundError(f"no cosnet_splits folder in {root}")


def _read(path, **csv_options) -> pd.DataFrame:
    return read_table(path, **csv_options)


COSNET_EXTRA_TABLE = "mp_extra_structures/cosnet_extra_structures.csv.gz"


@lru_cache(maxsize=2)
def mp_cifs(data_root: str) -> dict[str, tuple[str, str]]:
    """{MP id: (CIF text, data folder it came from)} of every offline MP structure a COSNet split can name.

    ``mp_synth_structures`` first, then the COSNet rows of ``mp_extra_structures`` (no id is in both;
    an id repeated there carries the same CIF). A data folder without the extra table still works.
    """
    root = Path(data_root)
    df = _read(root / MP_TABLE)
    cifs = {mp: (cif, MP_TABLE.split("/")[0]) for mp, cif in zip(df["material_id"], df["cif"])}
    extra = root / COSNET_EXTRA_TABLE
    if extra.is_file():
        ex = _read(extra, usecols=["material_id", "cif"])
        for mp, cif in zip(ex["material_id"], ex["cif"]):
            cifs.setdefault(mp, (cif, COSNET_EXTRA_TABLE.split("/")[0]))
    return cifs


def mp_id_of(ref) -> str | None:
    """MP/mvc id in a split's structure reference (``mp-1.cif``, ``SnO2_mp-856.cif``); None for ICSD codes."""
    if not isinstance(ref, str):
        return None
    m = re.search(r"((?:mp|mvc)-\d+)", ref)
    return m.group(1) if m else None


def mp_id_coverage(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Distinct MP ids the splits reference, and how many of them have a CIF offline (SOURCE.md counts)."""
    frame = pd.concat(splits.values(), ignore_index=True)
    ids = frame["structure_ref"].map(mp_id_of)
    return {"referenced": int(ids.dropna().nunique()),
            "with_cif": int(ids[frame["structure_status"] == "ok"].dropna().nunique())}


def load_cosnet_split(root, dataset: str) -> dict[str, pd.DataFrame]:
    """Train/val/test frames of one COSNet dataset (see the module docstring for columns)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown COSNet dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    data = _data_root(root)
    if dataset == "li_conductivity":
        return _li_conductivity(data)
    cifs = mp_cifs(str(data))
    out = {}
    for split in SPLITS:
        raw = _read(data / "cosnet_splits" / dataset / f"{split}.csv")
        refs = [r if isinstance(r, str) and r.strip() else None for r in raw["mp-id"]]
        cif, status, origin = [], [], []
        for ref in refs:
            mp = mp_id_of(ref)
            text, folder = cifs.get(mp, (None, None)) if mp else (None, None)
            cif.append(text)
            origin.append(folder)
            status.append("none" if ref is None else ("ok" if text is not None else "missing"))
        frame = pd.DataFrame({
            "id": [f"{dataset}-{i}" for i in raw["Unnamed: 0"]],
            "formula": raw["composition"].astype(str),
            "cif": cif,
            "target": pd.to_numeric(raw["target"], errors="coerce"),
            "structure_ref": refs,
            "structure_status": status,
            "structure_origin": origin,
        })
        if "space_group" in raw:
            frame["space_group"] = raw["space_group"]
        out[split] = frame
    return out


def _li_conductivity(data: Path) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import GroupShuffleSplit

    folder = data / "cosnet_splits" / "li_conductivity"
    raw = _read(folder / "Conductivity-database.csv", encoding="utf-8-sig")
    refs = [r if isinstance(r, str) and r.strip() else None for r in raw["structure files"]]
    cif, status = [], []
    for ref in refs:
        path = folder / "Structures_Cifs" / str(ref)
        if ref is None:
            cif.append(None), status.append("none")
        elif path.is_file():
            cif.append(path.read_text(errors="replace")), status.append("ok")
        else:
            cif.append(None), status.append("missing")
    frame = pd.DataFrame({
        "id": [f"li_conductivity-{i}" for i in range(len(raw))],
        "formula": raw["composition"].astype(str),
        "cif": cif,
        "target": pd.to_numeric(raw["log_target"], errors="coerce"),
        "structure_ref": refs,
        "structure_status": status,
        "temperature": pd.to_numeric(raw["temperature"], errors="coerce"),
    })
    # composition-disjoint: the same formula never sits in two splits
    groups = frame["formula"].str.replace(r"\s+", "", regex=True).to_numpy()
    idx = np.arange(len(frame))
    outer = GroupShuffleSplit(n_splits=1, train_size=0.6, random_state=LI_SPLIT_SEED)
    train, rest = next(outer.split(idx, groups=groups))
    inner = GroupShuffleSplit(n_splits=1, train_size=0.5, random_state=LI_SPLIT_SEED)
    val, test = next(inner.split(rest, groups=groups[rest]))
    parts = {"train": np.sort(train), "val": np.sort(rest[val]), "test": np.sort(rest[test])}
    return {k: frame.iloc[v].reset_index(drop=True) for k, v in parts.items()}


MP_EXTRA_TABLE = "mp_extra_structures/mp_structures_extra.csv.gz"


def mp_property_rows(root, target: str, sources=("matminer_flla_2015",), extra: bool = False) -> pd.DataFrame:
    """Offline MP structures with ``target`` (material_id, reduced_formula, cif, target, structure_source).

    Args:
        root: the shared data folder.
        target: the property column; rows without it are dropped.
        sources: keep rows of these ``structure_source`` values of ``mp_synth_structures``; None keeps all.
        extra: also take ``mp_extra_structures`` rows with the property (their ``source`` column names the
            origin; no MP id is in both tables).

    Returns:
        One row per MP id, sorted by id (the order random splits start from).
    """
    root = _data_root(root)
    df = _read(root / MP_TABLE)
    df = df[df[target].notna()]
    if sources is not None:
        df = df[df["structure_source"].isin(list(sources))]
    df = df[["material_id", "reduced_formula", "cif", target, "structure_source"]]
    if extra:
        ex = _read(root / MP_EXTRA_TABLE, dtype={"reduced_formula": str})
        ex = ex[ex[target].notna()].rename(columns={"source": "structure_source"})
        df = pd.concat([df, ex[df.columns]], ignore_index=True)
    df = df.drop_duplicates("material_id").rename(columns={target: "target"})
    return df.sort_values("material_id").reset_index(drop=True)


def load_mp_property(root, target: str = "formation_energy_per_atom", source: str | None = "matminer_flla_2015",
                     seed: int = 0, max_rows: int | None = None, holdout: float = 0.2,
                     extra: bool = False) -> dict[str, pd.DataFrame]:
    """An MP property with a structure on every row, split at random (``1 - 2·holdout`` / holdout / holdout).

    Used for the test-MAE-versus-structure-fraction study and the de-CGCNN learning curve. ``source``
    keeps one MP era so that targets are mutually consistent (the default is the Faber 2015 formation
    energies); None pools every era (see :func:`mp_property_rows`).

    Args:
        root: the shared data folder.
        target: the property column; rows without it are dropped.
        source: keep rows of this ``structure_source`` only; None keeps all.
        seed: seed of the random split.
        max_rows: keep at most this many rows (a random subset), or None for all.
        holdout: the share of rows in validation, and again in test.
        extra: also take the ``mp_extra_structures`` rows with the property.

    Returns:
        {"train", "val", "test"} → frames with id, formula, cif, target, structure_ref and structure_status
        columns.
    """
    df = mp_property_rows(root, target, None if source is None else (source,), extra=extra)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    if max_rows is not None:
        order = order[:max_rows]
    n = len(order)
    cuts = [int(round((1 - 2 * holdout) * n)), int(round((1 - holdout) * n))]
    parts = {"train": order[:cuts[0]], "val": order[cuts[0]:cuts[1]], "test": order[cuts[1]:]}
    out = {}
    for k, idx in parts.items():
        sub = df.iloc[np.sort(idx)]
        out[k] = pd.DataFrame({"id": sub["material_id"].to_numpy(), "formula": sub["reduced_formula"].astype(str).to_numpy(),
                               "cif": sub["cif"].to_numpy(), "target": sub["target"].astype(float).to_numpy(),
                               "structure_ref": sub["material_id"].to_numpy(), "structure_status": "ok"})
    return out
