"""COSNet reproduction: Table 1/2 analogues, weight distributions, structure-fraction study, sweeps.

Every study is a set of ``cosynth.training.cosnet.fit`` runs in ``runs/cosnet/...`` (resumable:
finished runs are read back, interrupted ones resume from their last checkpoint), followed by
pure analysis of the files those runs wrote. ``python -m cosynth.experiments.cosnet --help``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.training.cosnet import FitConfig, fit

MODES = ("composition", "bimodal_aug", "bimodal")
MODE_LABELS = {"composition": "composition only", "bimodal_aug": "bimodal + augmentation",
               "bimodal": "bimodal, no augmentation"}
SUBSETS = ("all", "without_structure", "with_structure")
DEFAULT_SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"

# The paper's Table 1 (test MAE, mean ± std over 5 seeds) and Table 2 (alignment R²).
PAPER_TABLE1 = {
    "li_conductivity": {"n": {"all": 1499, "without_structure": 1077, "with_structure": 422},
                        "composition": {"all": (1.022, 0.047), "without_structure": (0.906, 0.048), "with_structure": (1.425, 0.091)},
                        "bimodal_aug": {"all": (0.924, 0.012), "without_structure": (0.832, 0.033), "with_structure": (1.243, 0.116)},
                        "bimodal": {"all": (1.245, 0.078), "without_structure": (1.122, 0.099), "with_structure": (1.674, 0.145)}},
    "band_gap": {"n": {"all": 5901, "without_structure": 2741, "with_structure": 3160},
                 "composition": {"all": (0.502, 0.016), "without_structure": (0.435, 0.031), "with_structure": (0.560, 0.009)},
                 "bimodal_aug": {"all": (0.460, 0.004), "without_structure": (0.415, 0.009), "with_structure": (0.495, 0.010)},
                 "bimodal": {"all": (0.499, 0.009), "without_structure": (0.404, 0.008), "with_structure": (0.577, 0.009)}},
    "refractive_index": {"n": {"all": 1736, "without_structure": 995, "with_structure": 741},
                         "composition": {"all": (0.473, 0.008), "without_structure": (0.492, 0.007), "with_structure": (0.436, 0.015)},
                         "bimodal_aug": {"all": (0.430, 0.010), "without_structure": (0.421, 0.023), "with_structure": (0.439, 0.014)},
                         "bimodal": {"all": (0.482, 0.006), "without_structure": (0.441, 0.009), "with_structure": (0.514, 0.009)}},
    "rdielectric_constant": {"n": {"all": 1768, "without_structure": 1140, "with_structure": 628},
                             "composition": {"all": (235, 6), "without_structure": (295, 12), "with_structure": (118, 16)},
                             "bimodal_aug": {"all": (219, 7), "without_structure": (291, 10), "with_structure": (72, 0)},
                             "bimodal": {"all": (225, 4), "without_structure": (300, 6), "with_structure": (71, 1)}},
}
PAPER_TABLE2 = {"composition": (0.373, 0.034), "bimodal_aug": (0.435, 0.048), "bimodal": (0.371, 0.019)}


def load_splits(dataset: str, data_root=None) -> dict[str, pd.DataFrame]:
    from cosynth.data.cosnet_splits import load_cosnet_split

    return load_cosnet_split(data_root or DEFAULT_SHARED, dataset)


def subsample(splits: dict[str, pd.DataFrame], n: int | None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """At most ``n`` training rows (val/test ``n // 2``), chosen by seed — for quick runs."""
    if n is None:
        return splits
    out = {}
    for k, df in splits.items():
        m = n if k == "train" else max(n // 2, 1)
        out[k] = df.sample(n=min(m, len(df)), random_state=seed).sort_index().reset_index(drop=True)
    return out


def run_table1(dataset: str, out_dir, *, modes=MODES, seeds=range(5), config: FitConfig | None = None,
               data_root=None, max_train: int | None = None, verbose: bool = True, cache=None) -> pd.DataFrame:
    """Train every (seed, mode) into ``out_dir/<mode>/seed<k>``; one row of metrics per run."""
    config = config or FitConfig()
    splits = subsample(load_splits(dataset, data_root), max_train)
    rows = []
    for seed in seeds:
        for mode in modes:
            t0 = time.perf_counter()
            m = fit(splits, Path(out_dir) / mode / f"seed{seed}", replace(config, mode=mode, seed=seed),
                    verbose=verbose, cache=cache)
            if verbose:
                print(f"== {dataset} {mode} seed {seed}: test MAE {m.get('test_mae_all', float('nan')):.4f} "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
            rows.append({"dataset": dataset, "mode": mode, "seed": seed, **m})
    return pd.DataFrame(rows)


def _parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m cosynth.experiments.cosnet", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table1", help="train the three modes over seeds for one dataset")
    t.add_argument("--dataset", default="band_gap")
    t.add_argument("--out", default="runs/cosnet")
    t.add_argument("--modes", default="composition,bimodal_aug,bimodal")
    t.add_argument("--seeds", default="0-4")
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-2)
    t.add_argument("--weight-decay", type=float, default=1e-1)
    t.add_argument("--lr-decay", type=float, default=0.96)
    t.add_argument("--data-root", default=None)
    t.add_argument("--max-train", type=int, default=None)
    args = p.parse_args(argv)
    if args.cmd == "table1":
        cfg = FitConfig(epochs=args.epochs, threads=args.threads, lr=args.lr, weight_decay=args.weight_decay,
                        lr_decay=args.lr_decay)
        df = run_table1(args.dataset, Path(args.out) / args.dataset, modes=args.modes.split(","),
                        seeds=_parse_seeds(args.seeds), config=cfg, data_root=args.data_root,
                        max_train=args.max_train)
        print(df.filter(regex="mode|seed|test_mae_(all|with|without)").to_string())


if __name__ == "__main__":
    main()
