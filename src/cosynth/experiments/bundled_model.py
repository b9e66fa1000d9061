"""Train the bundled synthesizability model: `python -m cosynth.experiments.bundled_model`.

Single-source analogue (MP polymorphs of formulas with both ICSD and theoretical entries, see
`cosynth.data.single_source`), stratified 60/20/20 split, seed 0. Resumable: re-run the same
command after an interruption. Copy `RUN_DIR/model.pt` into `cosynth/pretrained/` to bundle it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cosynth.data.single_source import single_source_table
from cosynth.training.voxel import TrainConfig, train_voxel


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[3] / ".." / "shared" / "data"))
    ap.add_argument("--run-dir", default="runs/bundled-synth-mp")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    table = run / "single_source.parquet"
    if not table.exists():
        single_source_table(args.data_root).to_parquet(table)
    config = TrainConfig(label="label", epochs=args.epochs, seed=args.seed, batch_size=16, lr=1e-3,
                         id_column="material_id", max_minutes=args.max_minutes, test_ensemble=20)
    metrics = train_voxel(table, run, config, progress=False)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
