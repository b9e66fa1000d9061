"""`cosynth predict` on N mutated crystal files (the CLI, in a subprocess); prints a table, writes JSON.

The inputs are those of the fuzz test (:mod:`cosynth.io.fuzz`: real CIFs and POSCARs with numbers
replaced by 1e30/NaN/inf/nothing, lines dropped/duplicated/swapped/garbled, bytes flipped, elements
replaced, files truncated, plus hand-made extremes), written as files plus one CSV of CIF rows.
Reported: output rows (must equal N), error rows, share of bare-exception messages, wall time and
the CLI's peak RSS (``resource.getrusage(RUSAGE_CHILDREN)``), optionally under an address-space
limit.

    python benchmarks/fuzz_predict.py [--n 1000] [--seed 0] [--ensemble 1] [--limit-gb 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MP_TABLE = REPO.parent / "shared" / "data" / "mp_synth_structures" / "mp_structures_labelled.csv.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--limit-gb", type=float, default=10.0, help="RLIMIT_AS of the CLI process (0: none)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.json")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from cosynth.io.errors import is_bare
    from cosynth.io.fuzz import make_inputs, write_inputs

    shared = MP_TABLE if MP_TABLE.exists() else None
    inputs = make_inputs(args.n, args.seed, shared)
    with tempfile.TemporaryDirectory(prefix="cosynth-fuzz-predict-") as tmp:
        folder = Path(tmp) / "inputs"
        paths = write_inputs(inputs, folder)
        table = [str(p) for p in paths if p.suffix == ".csv"]
        out = Path(tmp) / "predictions.csv"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-c", "from cosynth.cli import app; app(prog_name='cosynth')", "predict", str(folder),
               *table, "--ensemble", str(args.ensemble), "-o", str(out)]

        def limit() -> None:
            if args.limit_gb > 0:
                size = int(args.limit_gb * 2**30)
                resource.setrlimit(resource.RLIMIT_AS, (size, size))

        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=limit)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows = pd.read_csv(out, keep_default_na=False, dtype=str) if out.exists() else pd.DataFrame()
    errors = rows[rows["status"] == "error"] if len(rows) else rows
    messages = errors["error"].tolist() if len(errors) else []
    bare = [m for m in messages if is_bare(m)]
    memory = [m for m in messages if "memory" in m.lower()]
    result = {
        "command": " ".join(["cosynth predict", "<folder>", "<rows.csv>", "--ensemble", str(args.ensemble)]),
        "inputs": args.n,
        "seed": args.seed,
        "seeds_from_mp": shared is not None,
        "limit_gb": args.limit_gb,
        "exit_code": done.returncode,
        "rows": int(len(rows)),
        "ok": int((rows["status"] == "ok").sum()) if len(rows) else 0,
        "errors": len(messages),
        "bare": len(bare),
        "bare_share": len(bare) / len(messages) if messages else 0.0,
        "memory_error_rows": len(memory),
        "wall_s": round(wall, 1),
        "s_per_input": round(wall / max(1, args.n), 4),
        "peak_rss_mb": round(peak_mb, 1),
        "bare_examples": bare[:10],
        "stderr_tail": done.stderr[-1500:] if done.returncode else "",
        "stderr_warnings": sum("Warning" in line for line in done.stderr.splitlines()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key not in ("bare_examples", "stderr_tail"):
            print(f"{key:<{width}}  {value}")
    for m in bare[:5]:
        print("  bare:", m[:160])
    return 0 if done.returncode in (0, 1) and len(rows) == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
