"""Speed and memory of the synthesizability engine on this machine; prints a table, writes JSON.

Measures, each with the dense PyTorch path as the in-process baseline where one exists:
image build (ms per rotation), CNN forward (ms/image), training step (ms/image), end-to-end
`predict` at E = 1 and E = 100 (s/crystal) on the 13 XIE-SPP example CIFs, and peak RSS of a
streamed prediction of 1,000 crystals (separate process).

    python benchmarks/bench_engine.py [--quick] [--out benchmarks/results/engine.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFS = SHARED / "data/hypothetical_structures/xiespp_example_polymorph_cifs.tar.gz"
MP_TABLE = SHARED / "data/mp_synth_structures/mp_structures_labelled.csv.gz"
TARGETS = {"image_ms": 5, "forward_ms": 10, "train_step_ms": 40, "predict_e100_s": 1.0, "peak_rss_mb": 1000}


def timed(fn, repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def example_cifs(tmp: Path) -> list[Path]:
    with tarfile.open(CIFS) as tar:
        tar.extractall(tmp, filter="data")
    return sorted(tmp.rglob("*.cif"))


def bench(quick: bool) -> dict:
    from cosynth.io import read_crystals
    from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN
    from cosynth.predict import predict
    from cosynth.represent.voxel import CrystalImager, crystal_rng, sample_rotations

    torch.manual_seed(0)
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = example_cifs(Path(tmp))
        structures = [r.structure for r in read_crystals(files)]
        imagers, t_tile = [], []
        for s in structures:
            t = time.perf_counter()
            imagers.append(CrystalImager.from_structure(s))
            t_tile.append(time.perf_counter() - t)
        res["tiling_ms_per_crystal"] = 1e3 * float(np.mean(t_tile))
        n_rot = 3 if quick else 10
        for sampler in ("haar", "xiespp"):
            per = []
            for k, im in enumerate(imagers):
                angles = sample_rotations(sampler, n_rot, crystal_rng(0, str(k)))
                per.append(timed(lambda: [im.image(a, sampler) for a in angles], 1) / n_rot)
            res[f"image_ms_{sampler}"] = 1e3 * float(np.mean(per))
        images = [im.image(sample_rotations("haar", 1, crystal_rng(1, str(k)))[0]) for k, im in enumerate(imagers)]
        res["occupied_voxels_mean"] = float(np.mean([len(i.numbers) for i in images]))

        model = VoxelCNN().eval()
        batch8 = SparseBatch.from_images(images[:8])
        with torch.inference_mode():
            res["forward_ms_sparse"] = 1e3 * timed(lambda: model(batch8), 2 if quick else 5) / 8
            dense = SparseBatch.from_images(images[:2]).dense()
            res["forward_ms_dense"] = 1e3 * timed(lambda: model.forward_dense(dense), 1 if quick else 2) / 2
        model.train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        y8 = torch.ones(8)

        def step(x, y):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            opt.step()

        res["train_step_ms_sparse"] = 1e3 * timed(lambda: step(batch8, y8), 2 if quick else 5) / 8
        dense2 = SparseBatch.from_images(images[:2]).dense()
        res["train_step_ms_dense"] = 1e3 * timed(lambda: step(dense2, torch.ones(2)), 1) / 2
        model.eval()

        for e in (1, 100):
            if quick and e == 100:
                e = 10
            t = time.perf_counter()
            predict(files, model, ensemble=e, seed=0)
            res[f"predict_e{e}_s_per_crystal"] = (time.perf_counter() - t) / len(files)

    n_stream = 100 if quick else 1000
    res["stream_crystals"] = n_stream
    res["peak_rss_mb"] = stream_rss(n_stream)
    return res


def stream_rss(n: int) -> float:
    """Peak RSS (MB) of a fresh process predicting ``n`` MP crystals at E = 1, streamed."""
    code = f"""
import resource, sys, pandas as pd, torch
from cosynth.models.voxel_cnn.model import VoxelCNN
from cosynth.predict import predict
df = pd.read_csv({str(MP_TABLE)!r}, keep_default_na=False, na_values=[""], usecols=["material_id", "cif"], nrows={n})
torch.manual_seed(0)
r = predict(df, VoxelCNN(), ensemble=1, id_column="material_id")
# VmHWM, not ru_maxrss: on Linux ru_maxrss survives fork+exec and would report the parent's peak
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, E=10 instead of 100, 100 streamed crystals")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/engine.json"))
    args = ap.parse_args()
    if not CIFS.exists():
        sys.exit(f"benchmark needs {CIFS} (the shared data folder beside the repository)")
    res = bench(args.quick)
    rows = [
        ("tiling (once per crystal)", "ms/crystal", res["tiling_ms_per_crystal"], None, None),
        ("image build, haar", "ms/rotation", res["image_ms_haar"], None, TARGETS["image_ms"]),
        ("image build, xiespp (exact)", "ms/rotation", res["image_ms_xiespp"], None, TARGETS["image_ms"]),
        ("CNN forward", "ms/image", res["forward_ms_sparse"], res["forward_ms_dense"], TARGETS["forward_ms"]),
        ("training step", "ms/image", res["train_step_ms_sparse"], res["train_step_ms_dense"], TARGETS["train_step_ms"]),
        ("predict end to end, E=1", "s/crystal", res["predict_e1_s_per_crystal"], None, None),
    ]
    e_key = next(k for k in res if k.startswith("predict_e") and k != "predict_e1_s_per_crystal")
    rows.append((f"predict end to end, E={e_key[9:e_key.index('_s_')]}", "s/crystal", res[e_key], None,
                 TARGETS["predict_e100_s"] if e_key == "predict_e100_s_per_crystal" else None))
    rows.append((f"peak RSS, {res['stream_crystals']} crystals streamed", "MB", res["peak_rss_mb"], None,
                 TARGETS["peak_rss_mb"]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| measure | unit | cosynth (sparse) | dense PyTorch | target |\n|---|---|---|---|---|")
    for name, unit, ours, base, target in rows:
        fmt = (lambda v: "–" if v is None else (f"{v:.3g}" if v < 100 else f"{v:.0f}"))
        print(f"| {name} | {unit} | {fmt(ours)} | {fmt(base)} | {'≤ ' + fmt(target) if target else '–'} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"results": res, "targets": TARGETS, "quick": args.quick, "cpus": os.cpu_count(),
               "torch": torch.__version__, "max_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
