"""The single-source synthesizability analogue (bias-study spec) from shared/data.

Materials Project structures of reduced formulas that have both an ICSD-tagged (positive,
experimentally reported) and a theoretical (negative) polymorph: the model must then tell
polymorphs of the same composition apart rather than compositions or sources.
"""

from __future__ import annotations

import pandas as pd

from cosynth.config import data_root as data_root_of
from cosynth.io.files import read_table

TABLE = "mp_synth_structures/mp_structures_labelled.csv.gz"


def single_source_table(data_root) -> pd.DataFrame:
    """Rows (material_id, reduced_formula, structure_source, cif, label) of formulas that have
    both labels; label = ICSD tag from PU-CGCNN lists, else the SynCoTrain oxide label."""
    df = read_table(data_root_of(data_root) / TABLE)
    label = df["label_icsd_pucgcnn"].fillna(df["label_synth_syncotrain"])
    df = df.assign(label=label).dropna(subset=["label"])
    df["label"] = df["label"].astype(int)
    both = df.groupby("reduced_formula")["label"].nunique()
    df = df[df["reduced_formula"].isin(both[both == 2].index)]
    cols = ["material_id", "reduced_formula", "structure_source", "density_g_cm3", "cif", "label"]
    return df[cols].sort_values("material_id").reset_index(drop=True)
