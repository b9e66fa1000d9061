"""Loaders: every dataset of ``../shared/data`` by folder name, and CGCNN-style CIF folders.

Each shared dataset has its own quirks (label in two columns, CIFs in a tarball, structure
references by file name); the loader resolves them once so every caller gets a CrystalTable
with ``id``, ``formula``, optional ``cif``, a ``source`` naming the dataset and the dataset's
own columns. Public online sources live in :mod:`cosynth.data.optimade` and
:mod:`cosynth.data.mp_api`.
"""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from cosynth.config import MP_TABLE, data_root
from cosynth.data.table import CrystalTable
from cosynth.io.files import read_table

__all__ = ["SHARED_DATASETS", "load", "load_shared", "load_cgcnn", "mp_labelled", "mp_structures_labelled",
           "default_data_root"]

EXTRA_TABLE = "mp_extra_structures/mp_structures_extra.csv.gz"
CPUL_TABLE = "mp_extra_structures/mp_icsd_labels_cpul.csv.gz"
#: label lists in the order they are trusted: CPUL (2022, close to MP v2022.10.28), PU-CGCNN, SynCoTrain
LABEL_LISTS = {"cpul": "label_icsd_cpul", "pucgcnn": "label_icsd_pucgcnn", "syncotrain": "label_synth_syncotrain"}



def default_data_root() -> Path:
    """The shared data root (see :func:`cosynth.config.data_root`)."""
    return data_root()


def _finish(table: CrystalTable, source: str) -> CrystalTable:
    """Name the dataset in a ``source`` column (kept if the data has its own)."""
    if "source" not in table.frame.columns:
        table.frame["source"] = source
    return table


def _tar_cifs(path: Path) -> dict[str, str]:
    """{file stem: CIF text} of every .cif member of a tarball (read in memory, nothing extracted)."""
    out = {}
    with tarfile.open(path, "r:gz") as tf:
        for member in tf.getmembers():
            if member.isfile() and member.name.lower().endswith(".cif"):
                data = tf.extractfile(member).read()
                out[Path(member.name).stem] = data.decode("utf-8", errors="replace")
    return out


# ---- one function per shared dataset -----------------------------------------------------------
def first_label(frame: pd.DataFrame, columns: dict[str, str]) -> tuple[pd.Series, pd.Series]:
    """(label, name of the list it came from), first non-empty of ``columns`` (name → column)."""
    label = pd.Series(np.nan, index=frame.index)
    source = pd.Series(None, index=frame.index, dtype=object)
    for name, column in columns.items():
        values = pd.to_numeric(frame[column], errors="coerce") if column in frame else None
        if values is None:
            continue
        take = label.isna() & values.notna()
        label[take] = values[take]
        source[take] = name
    return label, source


def mp_structures_labelled(root=None) -> pd.DataFrame:
    """Every labelled MP structure of ``mp_synth_structures`` and ``mp_extra_structures``.

    An MP id in both folders is kept once, from the first. Each row's ``label`` (1 = ICSD-tagged)
    comes from the first list of :data:`LABEL_LISTS` that has the id; ``label_source`` says which.
    ``origin`` names the subset a structure came from (``structure_source`` of the first folder,
    ``source`` of the second) and ``folder`` the folder.

    Returns:
        The two tables' columns plus ``origin``, ``folder``, ``label`` (int), ``label_source``;
        rows without a label or CIF are dropped.
    """
    root = data_root(root)
    cpul = read_table(root / CPUL_TABLE).drop_duplicates("material_id").set_index("material_id")["label_icsd_cpul"]
    base = read_table(root / MP_TABLE, dtype={"reduced_formula": str})
    base["label_icsd_cpul"] = base["material_id"].map(cpul)
    base = base.assign(origin=base["structure_source"], folder="mp_synth_structures")
    extra = read_table(root / EXTRA_TABLE, dtype={"reduced_formula": str})
    extra["label_icsd_cpul"] = extra["label_icsd_cpul"].fillna(extra["material_id"].map(cpul))
    extra = extra.assign(origin=extra["source"], folder="mp_extra_structures", clscore_pucgcnn=np.nan)
    frame = pd.concat([base, extra], ignore_index=True).drop_duplicates("material_id", keep="first")
    frame["label"], frame["label_source"] = first_label(frame, LABEL_LISTS)
    frame = frame.dropna(subset=["label", "cif"]).reset_index(drop=True)
    frame["label"] = frame["label"].astype(int)
    return frame


def mp_labelled(root: Path, parse: bool = True) -> CrystalTable:
    """MP structures with a ``label`` column: PU-CGCNN ICSD tag, else the SynCoTrain label
    (1 = experimentally reported, 0 = theoretical; empty where neither list has the id), and
    ``label_origin`` saying which list gave it."""
    df = read_table(Path(root) / MP_TABLE, dtype={"reduced_formula": str})
    label = df["label_icsd_pucgcnn"].fillna(df["label_synth_syncotrain"])
    df["label"] = label.astype("Int64")
    df["label_origin"] = np.where(df["label_icsd_pucgcnn"].notna(), "pucgcnn_icsd",
                                  np.where(df["label_synth_syncotrain"].notna(), "syncotrain", None))
    table = CrystalTable.from_frame(df, id_column="material_id", formula_column="reduced_formula",
                                    cif_column="cif", parse=parse)
    return _finish(table, "mp_synth_structures")


def _mp_synth_labels(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    folder = Path(root) / "mp_synth_labels"
    if subset in (None, "pucgcnn"):
        parts = []
        for name, y in (("pucgcnn_MP_icsd_CLscore.csv.gz", 1), ("pucgcnn_MP_virtual_CLscore.csv.gz", 0)):
            part = read_table(folder / name, dtype={"composition": str})
            parts.append(part.assign(label=y))
        df = pd.concat(parts, ignore_index=True)
        return _finish(CrystalTable.from_frame(df, id_column="id", formula_column="composition"), "mp_synth_labels:pucgcnn")
    if subset == "syncotrain":
        df = read_table(folder / "syncotrain_mp_oxides_synth_labels.csv.gz").rename(columns={"synth": "label"})
        # no formula in this file: take it from the MP tables that have the id (structures, PU-CGCNN lists)
        formulas = {}
        for name in ("pucgcnn_MP_icsd_CLscore.csv.gz", "pucgcnn_MP_virtual_CLscore.csv.gz"):
            part = read_table(folder / name, usecols=["id", "composition"], dtype={"composition": str})
            formulas.update(zip(part["id"], part["composition"]))
        mp = read_table(Path(root) / MP_TABLE, usecols=["material_id", "reduced_formula"], dtype={"reduced_formula": str})
        formulas.update(zip(mp["material_id"], mp["reduced_formula"]))
        df["reduced_formula"] = df["material_id"].map(formulas)
        return _finish(CrystalTable.from_frame(df, id_column="material_id", formula_column="reduced_formula"),
                       "mp_synth_labels:syncotrain")
    raise ValueError(f"mp_synth_labels has subsets pucgcnn, syncotrain; not {subset!r}")


def _obelix(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    folder = Path(root) / "obelix_li_conductivity"
    if subset in (None, "obelix"):
        df = read_table(folder / "obelix_all.csv", dtype={"ID": str, "Reduced Composition": str})
        cifs = _tar_cifs(folder / "obelix_all_randomized_cifs.tar.gz")
        df["cif"] = [cifs.get(i) for i in df["ID"]]
        split = pd.Series(None, index=df.index, dtype=object)
        for name in ("train", "test"):
            ids = set(read_table(folder / f"{name}_idx.csv", dtype=str)["ID"])
            split[df["ID"].isin(ids)] = name
        df["split"] = split
        table = CrystalTable.from_frame(df, id_column="ID", formula_column="Reduced Composition", cif_column="cif",
                                        parse=parse)
        return _finish(table, "obelix")
    if subset == "hargreaves":
        df = read_table(folder / "hargreaves2023_LiIonDatabase.csv", dtype={"composition": str})
        df["ID"] = [f"hargreaves:{i}" for i in df["ID"]]
        return _finish(CrystalTable.from_frame(df, id_column="ID", formula_column="composition"), "hargreaves2023")
    raise ValueError(f"obelix_li_conductivity has subsets obelix, hargreaves; not {subset!r}")


def _zhuo(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    folder = Path(root) / "expt_bandgap_zhuo"
    files = {None: "zhuo2018_expt_non_metals.csv", "zhuo2018": "zhuo2018_expt_non_metals.csv",
             "mp_non_metals": "mp_non_metals_bandgap.csv.gz"}
    if subset not in files:
        raise ValueError(f"expt_bandgap_zhuo has subsets zhuo2018, mp_non_metals; not {subset!r}")
    df = read_table(folder / files[subset], dtype={"composition": str, "material_id": str})
    name = subset or "zhuo2018"
    return _finish(CrystalTable.from_frame(df, id_column="material_id", formula_column="composition"), name)


def _hypothetical(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    folder = Path(root) / "hypothetical_structures"
    if subset in (None, "wbm"):
        df = read_table(folder / "wbm_random972_relaxed.csv.gz", dtype={"reduced_formula": str})
        return _finish(CrystalTable.from_frame(df, id_column="material_id", formula_column="reduced_formula",
                                               cif_column="cif", parse=parse), "wbm")
    if subset in ("perov5_val", "perov5_test", "perov5"):
        names = ["val", "test"] if subset == "perov5" else [subset.split("_")[1]]
        parts = [read_table(folder / f"cdvae_perov5_{n}.csv.gz", dtype={"formula": str}).assign(split=n) for n in names]
        df = pd.concat(parts, ignore_index=True).drop(columns=["Unnamed: 0"], errors="ignore")
        df["material_id"] = "perov5:" + df["material_id"].astype(str)
        return _finish(CrystalTable.from_frame(df, id_column="material_id", formula_column="formula",
                                               cif_column="cif", parse=parse), "perov5")
    if subset == "xiespp":
        cifs = _tar_cifs(folder / "xiespp_example_polymorph_cifs.tar.gz")
        df = pd.DataFrame({"id": sorted(cifs), "cif": [cifs[k] for k in sorted(cifs)]})
        return _finish(CrystalTable.from_frame(df, id_column="id", cif_column="cif", parse=parse), "xiespp_examples")
    raise ValueError(f"hypothetical_structures has subsets wbm, perov5, perov5_val, perov5_test, xiespp; not {subset!r}")


def _alexandria(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    df = read_table(Path(root) / "alexandria_binary_structures" / "alexandria_binary_phonon1170.csv.gz",
              dtype={"reduced_formula": str})
    df = df.rename(columns={"label_icsd_pucgcnn": "label"})
    df["label"] = df["label"].astype("Int64")
    df["id"] = "alex:" + df["mp_id"].astype(str)  # same MP ids as mp_synth_structures, other relaxation
    return _finish(CrystalTable.from_frame(df, id_column="id", formula_column="reduced_formula",
                                           cif_column="cif", parse=parse), "alexandria")


def _cosnet(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    """COSNet splits as one table with a ``split`` column: the rows, ids and structures of
    :func:`cosynth.data.cosnet_splits.load_cosnet_split` (``dielectric_constant`` names the
    ``rdielectric_constant`` folder)."""
    from cosynth.data.cosnet_splits import DATASETS, load_cosnet_split

    task = {"dielectric_constant": "rdielectric_constant"}.get(subset or "band_gap", subset or "band_gap")
    if task not in DATASETS:
        raise ValueError(f"cosnet_splits has subsets {', '.join(DATASETS)}; not {subset!r}")
    splits = load_cosnet_split(root, task)
    df = pd.concat([frame.assign(split=name) for name, frame in splits.items()], ignore_index=True)
    return _finish(CrystalTable.from_frame(df, id_column="id", formula_column="formula", cif_column="cif",
                                           parse=parse), f"cosnet:{task}")


def _mp_synth_structures(root: Path, subset: str | None, parse: bool) -> CrystalTable:
    if subset not in (None, "all"):
        raise ValueError(f"mp_synth_structures has no subsets; got {subset!r}")
    return mp_labelled(root, parse=parse)


SHARED_DATASETS: dict[str, Callable[[Path, str | None, bool], CrystalTable]] = {
    "mp_synth_structures": _mp_synth_structures,
    "mp_synth_labels": _mp_synth_labels,
    "obelix_li_conductivity": _obelix,
    "expt_bandgap_zhuo": _zhuo,
    "hypothetical_structures": _hypothetical,
    "alexandria_binary_structures": _alexandria,
    "cosnet_splits": _cosnet,
}


def load_shared(name: str, root=None, *, subset: str | None = None, parse: bool = True) -> CrystalTable:
    """A dataset of ``../shared/data`` by folder name.

    Args:
        name: the dataset's folder name (a key of :data:`SHARED_DATASETS`).
        root: the shared data folder (default: :func:`default_data_root`).
        subset: picks one of the dataset's files, where it has several.
        parse: parse the structures now.

    Returns:
        The dataset as a CrystalTable.

    Raises:
        ValueError: an unknown dataset name (or subset).
        FileNotFoundError: the dataset's folder is missing.
    """
    root = Path(root) if root is not None else default_data_root()
    if name not in SHARED_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SHARED_DATASETS)}")
    if not (root / name).is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root / name}")
    return SHARED_DATASETS[name](root, subset, parse)


def load_cgcnn(folder, *, labels: str | None = None, target_names: list[str] | None = None) -> CrystalTable:
    """A CGCNN-style folder: ``<id>.cif`` files plus a CSV of ids and targets.

    The CSV is read with its header when its first cell is ``id``, ``material_id``, ``cif_id`` or ``name``;
    otherwise as headerless (id, target, ...). Rows whose CIF is missing or broken go to ``errors``.

    Args:
        folder: the folder.
        labels: the CSV's file name in the folder (default ``id_prop.csv``).
        target_names: names of the target columns of a headerless CSV (default ``target``, or
            ``target_0``, ``target_1``, … with several).

    Returns:
        The CrystalTable.

    Raises:
        FileNotFoundError: no label file.
    """
    folder = Path(folder)
    path = folder / (labels or "id_prop.csv")
    if not path.exists():
        raise FileNotFoundError(f"no label file {path} (CGCNN folders hold id_prop.csv next to the CIFs)")
    with open(path, newline="") as fh:
        first = next(csv.reader(fh), [])
    has_header = bool(first) and first[0].strip().lower() in ("id", "material_id", "cif_id", "name")
    if has_header:
        df = read_table(path, dtype={first[0]: str})
        df = df.rename(columns={first[0]: "id"})
    else:
        df = read_table(path, header=None, dtype={0: str})
        names = target_names or (["target"] if df.shape[1] == 2 else [f"target_{k}" for k in range(df.shape[1] - 1)])
        df.columns = ["id", *names]
    cifs, missing = [], []
    for rid in df["id"].astype(str):
        f = folder / f"{rid}.cif"
        cifs.append(f.read_text(errors="replace") if f.exists() else None)
        missing.append(not f.exists())
    df["cif"] = cifs
    bad = df[np.array(missing)]
    table = CrystalTable.from_frame(df[~np.array(missing)], id_column="id", cif_column="cif",
                                    formula_column="formula" if "formula" in df.columns else None)
    if len(bad):
        rows = np.flatnonzero(missing)
        extra = pd.DataFrame({"row": rows, "id": bad["id"].astype(str).to_numpy(),
                              "error": [f"file not found: {folder / (str(i) + '.cif')}" for i in bad["id"]]})
        # rows of the accepted part were numbered within it; renumber them to the CSV's rows
        kept = np.flatnonzero(~np.array(missing))
        errors = table.errors.copy()
        errors["row"] = [int(kept[r]) for r in errors["row"]]
        table = CrystalTable(table.frame, pd.concat([errors, extra]).sort_values("row", ignore_index=True),
                             table._cache)
    return _finish(table, f"cgcnn:{folder.name}")


def load(source: str, root=None, *, subset: str | None = None, **kw) -> CrystalTable:
    """Load by shared-dataset name, CGCNN folder or table path (whichever ``source`` is).

    Args:
        source: a shared dataset name, a CGCNN folder or a table file.
        root: the shared data folder, for dataset names.
        subset: the dataset's file, for dataset names.
        **kw: passed to :func:`load_cgcnn` or :meth:`CrystalTable.read`; for dataset names only ``parse``
            is used.

    Returns:
        The CrystalTable.

    Raises:
        FileNotFoundError: ``source`` is none of the three.
    """
    if source in SHARED_DATASETS:
        return load_shared(source, root, subset=subset, parse=kw.pop("parse", True))
    path = Path(source)
    if path.is_dir():
        return load_cgcnn(path, **kw)
    if path.exists():
        return CrystalTable.read(path, **kw)
    raise FileNotFoundError(f"{source!r} is neither a dataset of the shared data ({', '.join(SHARED_DATASETS)}), "
                            "a folder nor a table file")
