"""Throughput of `cosynth screen` on a local Ray cluster, its agreement with `cosynth predict`, and a
capacity projection; prints a table, writes JSON.

For each model (the default ``cosynth-synth`` on N shared-data MP structures, and the voxel CNN at
E = 100 on a smaller set; a voxel network's speed does not depend on its weights):

* ``predict`` in one process, one torch thread: the reference rows and the per-core rate;
* ``screen`` on a local Ray cluster with 1 and with 2 predicting actors (one torch thread each,
  plus one CPU for the parse tasks): wall time, rows/s, and whether every row equals the
  reference row (all columns, floats to the bit).

Projection: a screen of C crystals on ``nodes`` × ``cores`` takes about
``C / (nodes · (cores − 1) · r₁ · e)`` seconds, with r₁ the measured rate of one actor and e the
parallel efficiency measured with 2 actors (one core per node parses). The 1→2 worker check
compares that model's 2-actor time with the measured one.

    python benchmarks/bench_screen.py [--n 5000] [--voxel-n 24] [--quick] [--out benchmarks/results/screen.json]

``--quick``: 200 crystals, 4 voxel crystals at E = 10. Timings on a shared machine vary; the JSON
records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TABLES = [SHARED / "mp_synth_structures/mp_structures_labelled.csv.gz",
          SHARED / "mp_extra_structures/mp_structures_extra.csv.gz"]
CRYSTALS_TO_PROJECT = 1_000_000
NODES = (1, 10, 100)
CORES_PER_NODE = 32


def structures(n: int, tmp: Path) -> Path:
    """The first ``n`` MP structures of the two shared folders, as one CSV table."""
    frames, left = [], n
    for path in TABLES:
        if left <= 0:
            break
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], usecols=["material_id", "cif"], nrows=left)
        frames.append(df)
        left -= len(df)
    out = tmp / f"mp_{n}.csv"
    pd.concat(frames).to_csv(out, index=False)
    return out


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> int:
    """How many crystals' rows differ between two runs (missing values compare equal)."""
    def plain(frame):
        frame = frame.drop(columns=[c for c in ("shard",) if c in frame]).sort_values("id").reset_index(drop=True)
        frame = frame.astype(object)
        return frame.where(frame.notna(), None)

    a, b = plain(a), plain(b)
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return max(len(a), len(b))
    return int((~(a == b) & ~(a.isna() & b.isna())).any(axis=1).sum())


def measure(name: str, table: Path, model: str, ensemble: int, tmp: Path) -> dict:
    import ray

    from cosynth.predict import predict
    from cosynth.scale import ScreenOptions, read_screen, screen

    torch.set_num_threads(1)
    t = time.perf_counter()
    reference = predict([str(table)], model, ensemble=ensemble).crystals
    t_predict = time.perf_counter() - t
    n = len(reference)
    res = {"model": name, "crystals": n, "ensemble": ensemble, "ok_rows": int((reference["status"] == "ok").sum()),
           "predict_s": round(t_predict, 2), "predict_rows_per_s": round(n / t_predict, 3), "screen": {}}
    for actors in (1, 2):
        ray.init(num_cpus=actors + 1, include_dashboard=False, log_to_driver=False)
        try:
            summary = screen([str(table)], tmp / f"{name}_{actors}", ScreenOptions(model=model, ensemble=ensemble),
                             shards=max(4, n // 250), actors=actors, batch_size=8)
        finally:
            ray.shutdown()
        rows = read_screen(tmp / f"{name}_{actors}")
        res["screen"][actors] = {"seconds": summary.seconds, "rows_per_s": summary.rows_per_second,
                                 "rows": summary.rows, "rows_differing_from_predict": same_rows(rows, reference)}
    r1 = res["screen"][1]["rows_per_s"]
    r2 = res["screen"][2]["rows_per_s"]
    efficiency = r2 / (2 * r1)
    res["parallel_efficiency_2"] = round(efficiency, 3)
    res["model_check_2_actors"] = {"predicted_s": round(n / (2 * r1), 2), "measured_s": res["screen"][2]["seconds"]}
    res["projection_hours"] = {f"{nodes}x{CORES_PER_NODE}": round(
        CRYSTALS_TO_PROJECT / (nodes * (CORES_PER_NODE - 1) * r1 * efficiency) / 3600, 2) for nodes in NODES}
    return res


def table(results: list[dict]) -> str:
    lines = ["| model | crystals | predict, 1 core (rows/s) | screen 1 actor (rows/s) | screen 2 actors (rows/s) | "
             "efficiency | rows ≠ predict | 10⁶ crystals: " + " / ".join(f"{n}×{CORES_PER_NODE} cores"
                                                                      for n in NODES) + " (h) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s1, s2 = r["screen"][1], r["screen"][2]
        lines.append(f"| {r['model']} (E={r['ensemble']}) | {r['crystals']} | {r['predict_rows_per_s']:.2f} | "
                     f"{s1['rows_per_s']:.2f} | {s2['rows_per_s']:.2f} | {r['parallel_efficiency_2']:.2f} | "
                     f"{s1['rows_differing_from_predict'] + s2['rows_differing_from_predict']} | "
                     + " / ".join(f"{h:g}" for h in r["projection_hours"].values()) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="MP structures for the default model")
    ap.add_argument("--voxel-n", type=int, default=24, help="MP structures for the voxel CNN at E = 100")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/screen.json"))
    args = ap.parse_args()
    if args.quick:
        args.n, args.voxel_n = 200, 4
    voxel_e = 10 if args.quick else 100
    load_before = os.getloadavg()
    from cosynth.models.registry import save_model
    from cosynth.models.voxel_cnn.model import VoxelCNN
    from cosynth.models.voxel_cnn.precision import resolve_precision

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        voxel = save_model(VoxelCNN().eval(), tmp / "voxel.pt", {"sampler": "haar"})
        results = [measure("cosynth-synth", structures(args.n, tmp), "cosynth-synth", 100, tmp),
                   measure("voxel CNN", structures(args.voxel_n, tmp), str(voxel), voxel_e, tmp)]
    text = table(results)
    print(text)
    print(f"voxel precision 'auto' resolves to {resolve_precision('auto')} here; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    payload = {"results": results, "table": text, "quick": args.quick, "cpus": os.cpu_count(),
               "voxel_precision": resolve_precision("auto"), "cores_per_node_assumed": CORES_PER_NODE,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
               "command": "python benchmarks/bench_screen.py" + (" --quick" if args.quick else "")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
