"""Shared fixtures: access to the read-only ``../shared`` folder (reference data, example CIFs).

Tests that need ``../shared`` skip with a clear reason when it is absent, except on CI (the
environment variable ``CI`` set), where its absence is a failure: those tests must run there.
The reference files are read in place and never copied into the repository.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
XIESPP_REF = "reference/xiespp"
XIESPP_CIFS_TAR = "data/hypothetical_structures/xiespp_example_polymorph_cifs.tar.gz"
N_XIESPP_CIFS = 13


def require_shared(rel) -> Path:
    """Path of ``SHARED/rel`` if it exists; otherwise skip the test (fail it when CI is set)."""
    path = SHARED / rel
    if path.exists():
        return path
    message = f"shared reference data not found: {path} (the ../shared folder next to the repository)"
    if os.environ.get("CI"):
        pytest.fail(message + "; it is required when CI is set", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_path():
    """``shared_path(rel)`` → existing path under ../shared, or skip (fail on CI)."""
    return require_shared


@pytest.fixture(scope="session")
def mp_sample():
    """``mp_sample(per_class, max_sites)`` → the first labelled small MP structures of each class
    (columns material_id, cif, label): cheap real crystals for training tests."""

    def sample(per_class: int, max_sites: int, nrows: int = 600) -> pd.DataFrame:
        path = require_shared("data/mp_synth_structures/mp_structures_labelled.csv.gz")
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], nrows=nrows)
        df["label"] = df["label_icsd_pucgcnn"].fillna(df["label_synth_syncotrain"])
        df = df.dropna(subset=["label"])
        df = df[df.nsites <= max_sites]
        df = pd.concat([df[df.label == 1].head(per_class), df[df.label == 0].head(per_class)])
        return df[["material_id", "cif", "label"]].reset_index(drop=True)

    return sample


@pytest.fixture(scope="session")
def xiespp_cifs(tmp_path_factory, shared_path) -> list[Path]:
    """The 13 upstream example CIFs, extracted to a temporary folder, sorted by path."""
    tar = shared_path(XIESPP_CIFS_TAR)
    dest = tmp_path_factory.mktemp("xiespp_cifs")
    with tarfile.open(tar, "r:gz") as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".cif")]
        for m in members:  # flatten; reject anything that would escape the folder
            name = Path(m.name).name
            data = tf.extractfile(m).read()
            (dest / name).write_bytes(data)
    paths = sorted(dest.glob("*.cif"))
    assert len(paths) == N_XIESPP_CIFS, f"expected {N_XIESPP_CIFS} CIFs in {tar}, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def xiespp_model(shared_path):
    """The published XIE-SPP v2 weights loaded into the compatible VoxelCNN (eval mode)."""
    from cosynth.models.voxel_cnn.model import VoxelCNN, load_keras_weights

    h5 = shared_path(f"{XIESPP_REF}/weights0500.h5")
    return load_keras_weights(VoxelCNN(), h5).eval()


@pytest.fixture(scope="session")
def parity_rows(shared_path) -> list[dict]:
    """Rows of parity_dev.csv with typed fields (angles and probability as float)."""
    rows = []
    with open(shared_path(f"{XIESPP_REF}/parity_dev.csv"), newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({
                "cif_name": r["cif_name"],
                "id": Path(r["cif_name"]).stem,
                "angles": (float(r["alpha_deg"]), float(r["beta_deg"]), float(r["gamma_deg"])),
                "n_occupied_voxels": int(r["n_occupied_voxels"]),
                "occupied_sha256": r["occupied_sha256"],
                "probability": float(r["probability"]),
            })
    assert len(rows) == 78
    return rows


@pytest.fixture(scope="session")
def parity_cells(shared_path) -> dict:
    """{cif_name: {"cell", "positions", "numbers"}} as the upstream code parsed each CIF."""
    with open(shared_path(f"{XIESPP_REF}/parity_dev_cells.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="session")
def parity_angles(parity_rows) -> list[tuple[float, float, float]]:
    """The six explicit angle triples of the reference, in their order."""
    seen: list[tuple[float, float, float]] = []
    for r in parity_rows:
        if r["angles"] not in seen:
            seen.append(r["angles"])
    assert len(seen) == 6
    return seen
