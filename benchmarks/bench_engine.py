"""Speed and memory of the synthesizability engine on this machine; prints a table, writes JSON.

Measures (min of N wall-clock repeats after a warm-up; batch 8 for the CNN):

* image build per rotation: one rotation per call (``image``) and all E in one call (``images``);
* block 1 (sparse, exact) forward and forward + backward per image;
* CNN forward and training step per image: fp32 sparse, bf16 sparse, dense fp32 (the plain
  PyTorch reference), with ratios;
* rotational ensemble end to end (read, image, CNN) in s/crystal at E = 100, fp32 and bf16,
  on the 13 XIE-SPP example CIFs and on Materials Project crystals, through
  ``cosynth.models.voxel_cnn.ensemble.iter_probabilities`` (imaging overlapped with the CNN),
  and through ``cosynth.predict.predict`` as it is wired today;
* bf16 vs fp32 likelihood agreement at E = 100 on ≥ 100 MP crystals, identical rotations
  (XIE-SPP weights and sampler when ../shared has them);
* peak RSS of a streamed prediction of 1,000 crystals (separate process).

    python benchmarks/bench_engine.py [--quick] [--out benchmarks/results/engine.json]

``--quick`` (< 2 min): fewer repeats, E = 10, 20 MP crystals, 100 streamed crystals.
Timings on a shared machine vary; the JSON records the load average before and after.
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
XIESPP_WEIGHTS = SHARED / "reference/xiespp/weights0500.h5"
TARGETS = {"image_ms": 1.0, "block1_forward_ms": 3.0, "block1_fwd_bwd_ms": 8.0, "forward_ms_bf16": 5.0,
           "train_step_ms_bf16": 15.0, "predict_e100_s": 0.5, "bf16_max_abs_dlikelihood": 0.01, "peak_rss_mb": 1000}


def timed(fn, repeat: int) -> float:
    """Minimum wall seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def example_cifs(tmp: Path) -> list[Path]:
    with tarfile.open(CIFS) as tar:
        tar.extractall(tmp, filter="data")
    return sorted(tmp.rglob("*.cif"))


def bench_images(imagers, n_rot: int, repeat: int) -> dict:
    from cosynth.represent.voxel import crystal_rng, sample_rotations

    res = {}
    for sampler in ("haar", "xiespp"):
        one, many = [], []
        for k, im in enumerate(imagers):
            angles = sample_rotations(sampler, n_rot, crystal_rng(0, str(k)))
            one.append(timed(lambda im=im, a=angles, s=sampler: [im.image(x, s) for x in a], 1) / n_rot)
            many.append(timed(lambda im=im, a=angles, s=sampler: im.images(a, s), repeat) / n_rot)
        res[f"image_ms_{sampler}_single"] = 1e3 * float(np.mean(one))
        res[f"image_ms_{sampler}_batched"] = 1e3 * float(np.mean(many))
    return res


def bench_cnn(images, repeat: int) -> dict:
    from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN

    res = {}
    torch.manual_seed(0)
    model = VoxelCNN()
    batch8 = SparseBatch.from_images(images[:8])
    w = model.conv1.weight.detach().clone().requires_grad_(True)
    b = model.conv1.bias.detach().clone().requires_grad_(True)
    grad = torch.randn(8, model.config["filters"], 32, 32, 32)
    with torch.no_grad():
        res["block1_forward_ms"] = 1e3 * timed(lambda: batch8.first_block(w, b), repeat) / 8
    res["block1_fwd_bwd_ms"] = 1e3 * timed(lambda: batch8.first_block(w, b).backward(grad), repeat) / 8

    model.eval()
    with torch.inference_mode():
        pooled = batch8.first_block(model.conv1.weight, model.conv1.bias)
        for precision in ("fp32", "bf16"):
            model.precision = precision
            res[f"forward_ms_{precision}"] = 1e3 * timed(lambda: model(batch8), repeat) / 8
            # where the time goes: blocks 2–3 + head alone (block 1 is fp32 in both modes)
            res[f"tail_ms_{precision}"] = 1e3 * timed(lambda: model._tail(pooled), repeat) / 8
        model.precision = "fp32"
        dense = SparseBatch.from_images(images[:2]).dense()
        res["forward_ms_dense_fp32"] = 1e3 * timed(lambda: model.forward_dense(dense), 1) / 2

    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step(x, y):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()

    y8 = torch.ones(8)
    for precision in ("fp32", "bf16"):
        model.precision = precision
        res[f"train_step_ms_{precision}"] = 1e3 * timed(lambda: step(batch8, y8), repeat) / 8
    model.precision = "fp32"
    dense2 = SparseBatch.from_images(images[:2]).dense()
    res["train_step_ms_dense_fp32"] = 1e3 * timed(lambda: step(dense2, torch.ones(2)), 1) / 2
    return res


def ensemble_run(records, model, precision: str, ensemble: int, sampler: str) -> tuple[float, dict]:
    """(wall seconds, {id: probabilities}) of iter_probabilities over ``records`` (a list or a
    zero-argument callable returning a fresh iterator, so reading is timed too)."""
    from cosynth.models.voxel_cnn.ensemble import iter_probabilities

    model.eval().precision = precision
    t = time.perf_counter()
    source = records() if callable(records) else records
    probs = {rid: p for rid, _, p, err in iter_probabilities(source, model, ensemble=ensemble, seed=0,
                                                           sampler=sampler) if err is None}
    return time.perf_counter() - t, probs


def agreement(p32: dict, p16: dict) -> dict:
    ids = sorted(set(p32) & set(p16))
    like = np.array([[p32[i].mean(), p16[i].mean()] for i in ids])
    per_image = np.concatenate([np.abs(p32[i] - p16[i]) for i in ids])
    d = np.abs(like[:, 0] - like[:, 1])
    return {"n_crystals": len(ids), "max_abs_dlikelihood": float(d.max()), "mean_abs_dlikelihood": float(d.mean()),
            "max_abs_dp_per_image": float(per_image.max()), "mean_abs_dp_per_image": float(per_image.mean())}


def load_scoring_model():
    """(model, sampler, name): the published XIE-SPP weights if ../shared has them (a trained model
    gives a realistic spread of likelihoods), else a randomly initialised VoxelCNN."""
    from cosynth.models.voxel_cnn.model import VoxelCNN, load_keras_weights

    if XIESPP_WEIGHTS.exists():
        return load_keras_weights(VoxelCNN(), XIESPP_WEIGHTS).eval(), "xiespp", "xiespp-weights0500"
    torch.manual_seed(0)
    return VoxelCNN().eval(), "haar", "random-init"


def bench_ensembles(files, quick: bool) -> dict:
    import pandas as pd

    from cosynth.io import iter_crystals, read_crystals
    from cosynth.predict import predict

    res: dict = {}
    e = 10 if quick else 100
    res["ensemble_E"] = e
    model, sampler, name = load_scoring_model()
    res["scoring_model"], res["scoring_sampler"] = name, sampler

    def read_examples():
        return iter_crystals(files)

    for precision in ("fp32", "bf16"):
        secs, _ = ensemble_run(read_examples, model, precision, e, sampler)
        res[f"examples_e{e}_s_per_crystal_{precision}"] = secs / len(files)
    t = time.perf_counter()
    model.precision = "fp32"
    predict(files, model, ensemble=e, seed=0, sampler=sampler)
    res[f"examples_e{e}_s_per_crystal_predict_py_fp32"] = (time.perf_counter() - t) / len(files)

    n_mp = 20 if quick else 100
    df = pd.read_csv(MP_TABLE, keep_default_na=False, na_values=[""], usecols=["material_id", "cif"], nrows=n_mp)
    n_ok = sum(r.ok for r in read_crystals(df, id_column="material_id"))
    probs = {}
    for precision in ("fp32", "bf16"):
        secs, probs[precision] = ensemble_run(lambda: iter_crystals(df, id_column="material_id"), model, precision,
                                              e, sampler)
        res[f"mp_e{e}_s_per_crystal_{precision}"] = secs / max(n_ok, 1)
    res["mp_crystals"] = n_ok
    res["bf16_vs_fp32"] = agreement(probs["fp32"], probs["bf16"])
    return res


def bench_graph_models(quick: bool) -> dict:
    """COSNet / CGCNN epoch timing: to be added (the lead's part); returns {} until then."""
    return {}


def bench(quick: bool) -> dict:
    from cosynth.io import read_crystals
    from cosynth.models.voxel_cnn.precision import bf16_support, resolve_precision
    from cosynth.represent.voxel import CrystalImager, crystal_rng, sample_rotations

    res: dict = {"bf16_support": bf16_support(), "precision_auto": resolve_precision("auto")}
    repeat = 2 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        files = example_cifs(Path(tmp))
        structures = [r.structure for r in read_crystals(files)]
        imagers, t_tile = [], []
        for s in structures:
            t = time.perf_counter()
            imagers.append(CrystalImager.from_structure(s))
            t_tile.append(time.perf_counter() - t)
        res["tiling_ms_per_crystal"] = 1e3 * float(np.mean(t_tile))
        res.update(bench_images(imagers, 10 if quick else 100, 1 if quick else 3))
        images = [im.image(sample_rotations("haar", 1, crystal_rng(1, str(k)))[0]) for k, im in enumerate(imagers)]
        res["occupied_voxels_mean_batch8"] = float(np.mean([len(i.numbers) for i in images[:8]]))
        res.update(bench_cnn(images, repeat))
        res.update(bench_ensembles(files, quick))
    res["graph_models"] = bench_graph_models(quick)
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


def fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def table(res: dict) -> list[str]:
    e = res["ensemble_E"]
    def ratio(a, b):
        return f"{b / a:.2f}×" if a and b else "–"

    lines = ["| measure | unit | fp32 sparse | bf16 sparse | dense fp32 | dense / fp32 | fp32 / bf16 | target |",
             "|---|---|---|---|---|---|---|---|"]

    def row(name, unit, f32, b16=None, dense=None, target=None):
        lines.append(f"| {name} | {unit} | {fmt(f32)} | {fmt(b16)} | {fmt(dense)} | {ratio(f32, dense)} | "
                     f"{ratio(b16, f32)} | {'≤ ' + fmt(target) if target else '–'} |")

    row("tiling (once per crystal)", "ms/crystal", res["tiling_ms_per_crystal"])
    for s in ("haar", "xiespp"):
        row(f"image build, {s}, one rotation per call", "ms/rotation", res[f"image_ms_{s}_single"])
        row(f"image build, {s}, all rotations in one call", "ms/rotation", res[f"image_ms_{s}_batched"],
            target=TARGETS["image_ms"])
    row("block 1 forward (sparse, batch 8)", "ms/image", res["block1_forward_ms"], target=TARGETS["block1_forward_ms"])
    row("block 1 forward + backward", "ms/image", res["block1_fwd_bwd_ms"], target=TARGETS["block1_fwd_bwd_ms"])
    row("CNN forward (batch 8; dense batch 2)", "ms/image", res["forward_ms_fp32"], res["forward_ms_bf16"],
        res["forward_ms_dense_fp32"], TARGETS["forward_ms_bf16"])
    row("blocks 2–3 + head alone (of the forward)", "ms/image", res["tail_ms_fp32"], res["tail_ms_bf16"])
    row("training step", "ms/image", res["train_step_ms_fp32"], res["train_step_ms_bf16"],
        res["train_step_ms_dense_fp32"], TARGETS["train_step_ms_bf16"])
    row(f"E={e} end to end, 13 example CIFs", "s/crystal", res[f"examples_e{e}_s_per_crystal_fp32"],
        res[f"examples_e{e}_s_per_crystal_bf16"], target=TARGETS["predict_e100_s"] if e == 100 else None)
    row(f"E={e}, 13 example CIFs, predict() as wired today", "s/crystal",
        res[f"examples_e{e}_s_per_crystal_predict_py_fp32"])
    row(f"E={e} end to end, {res['mp_crystals']} MP crystals", "s/crystal", res[f"mp_e{e}_s_per_crystal_fp32"],
        res[f"mp_e{e}_s_per_crystal_bf16"], target=TARGETS["predict_e100_s"] if e == 100 else None)
    row(f"peak RSS, {res['stream_crystals']} crystals streamed", "MB", res["peak_rss_mb"],
        target=TARGETS["peak_rss_mb"])
    a = res["bf16_vs_fp32"]
    lines.append(f"\nbf16 vs fp32 at E={e}, {a['n_crystals']} MP crystals, identical rotations "
                 f"({res['scoring_model']}, sampler {res['scoring_sampler']}): likelihood max |Δ| "
                 f"{a['max_abs_dlikelihood']:.3g}, mean |Δ| {a['mean_abs_dlikelihood']:.3g}; per image max |Δp| "
                 f"{a['max_abs_dp_per_image']:.3g}, mean {a['mean_abs_dp_per_image']:.3g} "
                 f"(target max ≤ {TARGETS['bf16_max_abs_dlikelihood']})")
    lines.append(f"bf16 support: {res['bf16_support']}; resolve_precision('auto') = {res['precision_auto']}")
    if res.get("graph_models"):
        lines.append(f"graph models: {json.dumps(res['graph_models'])}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="< 2 min: fewer repeats, E=10, 20 MP crystals, 100 streamed")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/engine.json"))
    args = ap.parse_args()
    for need in (CIFS, MP_TABLE):
        if not need.exists():
            sys.exit(f"benchmark needs {need} (the shared data folder beside the repository)")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    res = bench(args.quick)
    res["wall_s"] = time.perf_counter() - t0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}")
    print("\n".join(table(res)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"results": res, "targets": TARGETS, "quick": args.quick, "cpus": os.cpu_count(),
               "torch": torch.__version__, "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "max_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
