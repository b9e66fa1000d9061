"""COSNet reproduction: Table 1/2 analogues, weight distributions, structure-fraction study, sweeps.

Every study is a set of ``cosynth.training.bimodal.fit`` runs in ``runs/cosnet/...`` (resumable:
finished runs are read back, interrupted ones resume from their last checkpoint), followed by
pure analysis of the files those runs wrote. ``cosynth reproduce cosnet --help``, ``cosynth reproduce cosnet-table1 --help``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.config import data_root as config_data_root
from cosynth.io.files import read_table
from cosynth.training.bimodal import FitConfig, fit

MODES = ("composition", "bimodal_aug", "bimodal")
MODE_LABELS = {"composition": "composition only", "bimodal_aug": "bimodal + augmentation",
               "bimodal": "bimodal, no augmentation"}
SUBSETS = ("all", "without_structure", "with_structure")

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

    return load_cosnet_split(config_data_root(data_root), dataset)


def subsample(splits: dict[str, pd.DataFrame], n: int | None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """At most ``n`` training rows (val/test ``n // 2``, at least 1), chosen by seed — for quick runs.

    Args:
        splits: split name → frame.
        n: the most training rows; None returns ``splits`` unchanged.
        seed: random state of the draw.

    Returns:
        Split name → subsampled frame (rows in their original order, index reset).
    """
    if n is None:
        return splits
    out = {}
    for k, df in splits.items():
        m = n if k == "train" else max(n // 2, 1)
        out[k] = df.sample(n=min(m, len(df)), random_state=seed).sort_index().reset_index(drop=True)
    return out


def run_table1(dataset: str, out_dir, *, modes=MODES, seeds=range(5), config: FitConfig | None = None,
               data_root=None, max_train: int | None = None, verbose: bool = True, cache=None,
               train: bool = True) -> pd.DataFrame:
    """Train every (seed, mode) into ``out_dir/<mode>/seed<k>``; one row of metrics per run.

    Args:
        dataset: the COSNet dataset name.
        out_dir: the runs' parent folder.
        modes, seeds: the modes and seeds to train.
        config: fit settings (default :class:`FitConfig`); mode and seed are set per run.
        data_root: the shared data folder (default: the configured one).
        max_train: at most this many training rows (:func:`subsample`), or None for all.
        verbose: print a line per run.
        cache: passed to :func:`fit`.
        train: False reads finished runs only (a report while other runs still train); an unfinished
            run gives a row with ``finished`` False and no metrics.

    Returns:
        One row per run: dataset, mode, seed and the run's metrics.
    """
    from cosynth.data.cosnet_splits import OUTPUT_RELU
    from cosynth.training.run import RunDirectory

    config = replace(config or FitConfig(), nonneg=OUTPUT_RELU.get(dataset))
    splits = subsample(load_splits(dataset, data_root), max_train)
    rows = []
    for seed in seeds:
        for mode in modes:
            t0 = time.perf_counter()
            path, cfg = Path(out_dir) / mode / f"seed{seed}", replace(config, mode=mode, seed=seed)
            if not train:
                run = RunDirectory(path, asdict(cfg), defaults=asdict(FitConfig()))
                m = run.read_metrics() if run.finished() else {"finished": False}
            else:
                m = fit(splits, path, cfg, verbose=verbose, cache=cache)
            if verbose and m.get("finished", True):
                print(f"== {dataset} {mode} seed {seed}: test MAE {m.get('test_mae_all', float('nan')):.4f} "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
            rows.append({"dataset": dataset, "mode": mode, "seed": seed, **m})
    return pd.DataFrame(rows)


# ---- analysis ----------------------------------------------------------------------------------
def finished_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that finished (``run_table1(train=False)`` also lists unfinished ones)."""
    if "finished" not in runs:
        return runs
    return runs[runs["finished"].fillna(False).astype(bool)]


def summarize_table1(runs: pd.DataFrame) -> pd.DataFrame:
    """mean ± std over seeds of the test MAE per mode and subset (one row per mode × subset)."""
    out = []
    keys = [*SUBSETS, "with_structure_available", "with_structure_missing_offline"]
    for mode, grp in finished_runs(runs).groupby("mode", sort=False):
        for key in keys:
            col = f"test_mae_{key}"
            if col not in grp or grp[col].isna().all():
                continue
            vals = grp[col].dropna().to_numpy(dtype=float)
            out.append({"mode": mode, "subset": key, "n": int(grp[f"test_n_{key}"].iloc[0]),
                        "mean": float(vals.mean()), "std": float(vals.std(ddof=0)), "seeds": int(len(vals))})
    return pd.DataFrame(out)


SUBSET_LABELS = {"with_structure_missing_offline": "with structure, not usable here (not offline / unreadable CIF)",
                 "with_structure_available": "with structure usable here"}


def paired_deltas(runs: pd.DataFrame, mode: str = "bimodal_aug", base: str = "composition") -> pd.DataFrame:
    """Per subset, test MAE of ``mode`` minus ``base`` on the same seed: mean ± std and seeds ``mode`` wins.

    The seeds share splits and initialisation keys, so the paired difference is what tells whether a
    mode helps on a subset; negative is better.
    """
    keys = [*SUBSETS, "with_structure_available", "with_structure_missing_offline"]
    a = runs[runs["mode"] == mode].set_index("seed")
    b = runs[runs["mode"] == base].set_index("seed")
    seeds = a.index.intersection(b.index)
    out = []
    for key in keys:
        col = f"test_mae_{key}"
        if col not in a or col not in b or not len(seeds):
            continue
        d = (a.loc[seeds, col] - b.loc[seeds, col]).dropna().to_numpy(dtype=float)
        if len(d):
            out.append({"subset": key, "n": int(a.loc[seeds[0], f"test_n_{key}"]), "delta_mean": float(d.mean()),
                        "delta_std": float(d.std(ddof=0)), "wins": int((d < 0).sum()), "seeds": int(len(d))})
    return pd.DataFrame(out)


def usable_breakdown(out_dir, runs: pd.DataFrame, splits: dict[str, pd.DataFrame], mode: str = "bimodal_aug",
                     base: str = "composition") -> list[dict]:
    """Where the structure branch helps or hurts on the test rows whose structure the model saw: ``mode``
    minus ``base`` per seed, split by the data folder of the CIF and by zero / non-zero target (metals
    for band gaps); a split with one group only is left out.

    Args:
        out_dir: the runs' parent folder (``out_dir/<mode>/seed<k>/predictions.csv``).
        runs: the finished runs (gives the seeds both modes have).
        splits: the dataset's splits (give ``structure_origin``).
        mode, base: the two modes compared.

    Returns:
        One record per group: kind, group, n, both modes' mean MAE, Δ mean ± std and seeds where ``mode`` wins.
    """
    seeds = sorted(set(runs.loc[runs["mode"] == mode, "seed"]) & set(runs.loc[runs["mode"] == base, "seed"]))
    if not seeds:
        return []
    origin = dict(zip(splits["test"]["id"], splits["test"].get("structure_origin", pd.Series(dtype=object))))
    per_seed = []
    for seed in seeds:
        frames = {}
        for m in (mode, base):
            pred = read_table(Path(out_dir) / m / f"seed{seed}" / "predictions.csv")
            pred = pred[(pred["split"] == "test") & pred["has_structure"].astype(str).str.lower().isin(["true", "1"])]
            frames[m] = pred.set_index("id")
        both = frames[mode].join(frames[base]["prediction"].rename("base_prediction"), how="inner")
        both["err"], both["base_err"] = (both["prediction"] - both["target"]).abs(), (both["base_prediction"] - both["target"]).abs()
        both["origin"] = [origin.get(i) or "unknown" for i in both.index]
        both["target_kind"] = np.where(both["target"] == 0, "target = 0", "target ≠ 0")
        per_seed.append(both.assign(seed=seed))
    allrows = pd.concat(per_seed)
    out = []
    for kind, col in (("structure from", "origin"), ("target", "target_kind")):
        if allrows[col].nunique() < 2:
            continue
        for group, grp in allrows.groupby(col):
            by_seed = grp.groupby("seed")[["err", "base_err"]].mean()
            d = (by_seed["err"] - by_seed["base_err"]).to_numpy(float)
            out.append({"kind": kind, "group": str(group), "n": int(grp.index.nunique()),
                        f"mae_{base}": float(by_seed["base_err"].mean()), f"mae_{mode}": float(by_seed["err"].mean()),
                        "delta_mean": float(d.mean()), "delta_std": float(d.std(ddof=0)), "wins": int((d < 0).sum()),
                        "seeds": int(len(d))})
    return out


def constant_baseline(splits: dict[str, pd.DataFrame]) -> list[dict]:
    """Test MAE of predicting the training median for every row, per subset: the floor a model must beat
    (it matters for heavy-tailed targets such as the dielectric constant)."""
    median = float(np.median(splits["train"]["target"].dropna()))
    test = splits["test"].dropna(subset=["target"])
    status = test["structure_status"].to_numpy()
    err = (test["target"] - median).abs().to_numpy()
    masks = {"all": np.ones(len(test), bool), "without_structure": status == "none",
             "with_structure": status != "none", "with_structure_available": status == "ok"}
    return [{"subset": k, "n": int(m.sum()), "mae": float(err[m].mean()), "train_median": median}
            for k, m in masks.items() if m.any()]


def alignment_r2(run_dir) -> float | None:
    """R² on test rows with structure of a linear map C → volume per atom fitted on training rows
    with structure (Table 2). None when the run has no such rows."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    path = Path(run_dir) / "representations.npz"
    if not path.exists():
        return None
    z = np.load(path)
    if "train_C" not in z or "test_C" not in z:
        return None
    tr, te = np.isfinite(z["train_vpa"]), np.isfinite(z["test_vpa"])
    if tr.sum() < 3 or te.sum() < 3:
        return None
    reg = LinearRegression().fit(z["train_C"][tr], z["train_vpa"][tr])
    return float(r2_score(z["test_vpa"][te], reg.predict(z["test_C"][te])))


def summarize_alignment(out_dir, runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for mode, grp in runs.groupby("mode", sort=False):
        vals = [alignment_r2(Path(out_dir) / mode / f"seed{s}") for s in grp["seed"]]
        vals = np.array([v for v in vals if v is not None])
        if len(vals):
            rows.append({"mode": mode, "mean": float(vals.mean()), "std": float(vals.std(ddof=0)),
                         "seeds": int(len(vals))})
    return pd.DataFrame(rows)


def weight_table(out_dir, runs: pd.DataFrame, mode: str = "bimodal_aug") -> pd.DataFrame:
    """Test-row composition weights (all seeds) of one mode, with whether the structure was seen.

    Args:
        out_dir: the runs' parent folder (``out_dir/<mode>/seed<k>/predictions.csv``).
        runs: the :func:`run_table1` frame (gives the seeds).
        mode: the mode to read.

    Returns:
        The test rows of every seed's ``predictions.csv`` with a ``seed`` column; empty when there are none.
    """
    frames = []
    for seed in runs.loc[runs["mode"] == mode, "seed"]:
        path = Path(out_dir) / mode / f"seed{seed}" / "predictions.csv"
        if path.exists():
            p = read_table(path)
            frames.append(p[p["split"] == "test"].assign(seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_fraction_study(out_dir, *, fractions=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), seeds=(0,), config: FitConfig,
                       data_root=None, target: str = "formation_energy_per_atom", max_rows: int | None = 1500,
                       source: str | None = "matminer_flla_2015", holdout: float = 0.2, extra: bool = False,
                       verbose: bool = True, cache=None) -> pd.DataFrame:
    """Test MAE versus the share of rows that keep their structure (every split), bimodal + augmentation,
    on an MP property with a structure for every row (:func:`load_mp_property`).

    Args:
        out_dir: the runs' parent folder (``out_dir/fraction<pct>/seed<k>``).
        fractions: shares of rows that keep their structure.
        seeds: seeds to train.
        config: fit settings; mode, seed and structure fraction are set per run.
        data_root: the shared data folder (default: the configured one).
        target: the MP property.
        max_rows: at most this many rows of the property table, or None for all.
        source, holdout, extra: passed to :func:`load_mp_property` (one MP era by default).
        verbose: print a line per run.
        cache: passed to :func:`fit`.

    Returns:
        One row per (fraction, seed): test MAE (all rows and rows with structure), n_train, n_test, train_seconds.
    """
    from cosynth.data.cosnet_splits import load_mp_property

    splits = load_mp_property(config_data_root(data_root), target, source=source, max_rows=max_rows,
                              holdout=holdout, extra=extra)
    rows = []
    for seed in seeds:
        for f in fractions:
            cfg = replace(config, mode="bimodal_aug", seed=seed, structure_fraction=float(f),
                          structure_fraction_splits="all")
            m = fit(splits, Path(out_dir) / f"fraction{int(round(100 * f)):03d}" / f"seed{seed}", cfg,
                    verbose=verbose, cache=cache)
            if verbose:
                print(f"== fraction {f:g} seed {seed}: test MAE {m.get('test_mae_all', float('nan')):.4f}", flush=True)
            rows.append({"fraction": f, "seed": seed, "test_mae": m.get("test_mae_all"),
                         "test_mae_with_structure": m.get("test_mae_with_structure_available"),
                         "n_train": m.get("n_train_seen"), "n_test": m.get("test_n_all"),
                         "train_seconds": m.get("train_seconds")})
    return pd.DataFrame(rows)


# Xie & Grossman, PRL 120, 145301 (2018), Table I: CGCNN formation-energy test MAE on 46,744 MP crystals
# split 60/20/20, i.e. 28,046 training crystals; their Fig. 2(a) shows the MAE falling as a power law of
# the training-set size (a straight line on log-log axes).
CGCNN_PAPER = {"n_train": 28046, "mae": 0.039, "unit": "eV/atom", "property": "formation energy per atom",
               "source": "Xie & Grossman, Phys. Rev. Lett. 120, 145301 (2018), Table I and Fig. 2(a)"}


def run_learning_curve(out_dir, *, sizes=(1000, 3000, None), seeds=(0,), models=("cgcnn",), config: FitConfig,
                       data_root=None, target: str = "formation_energy_per_atom", holdout: float = 0.1,
                       max_rows: int | None = None, verbose: bool = True, cache=None) -> pd.DataFrame:
    """Test MAE versus training-set size on every offline MP structure with ``target`` (all eras pooled).

    Validation and test sets stay fixed; the training sets are nested (the first n rows of one seeded
    permutation), so the curve measures data, not a different draw. This is the check of de-CGCNN
    alone against the CGCNN paper's learning curve (:data:`CGCNN_PAPER`).

    Args:
        out_dir: the runs' parent folder (``out_dir/<model>/n<size>/seed<k>``).
        sizes: training-set sizes; None is every training row.
        seeds: seeds to train (initialisation and shuffling; the split is fixed).
        models: ``cgcnn`` (structure only) and/or ``roost`` (composition only, the reference).
        config: fit settings; model and seed are set per run.
        data_root: the shared data folder (default: the configured one).
        target: the MP property.
        holdout: the share of rows in validation, and again in test.
        max_rows: at most this many rows before the split (quick runs), or None for all.
        verbose: print a line per run.
        cache: passed to :func:`fit`.

    Returns:
        One row per (model, size, seed): n_train, test MAE, best epoch, train_seconds.
    """
    from cosynth.data.cosnet_splits import load_mp_property

    splits = load_mp_property(config_data_root(data_root), target, source=None, holdout=holdout, extra=True,
                              max_rows=max_rows)
    order = np.random.default_rng(12345).permutation(len(splits["train"]))
    rows = []
    for model in models:
        for size in sizes:
            n = len(order) if size is None else min(int(size), len(order))
            part = {**splits, "train": splits["train"].iloc[np.sort(order[:n])].reset_index(drop=True)}
            for seed in seeds:
                cfg = replace(config, model=model, mode="bimodal" if model == "cgcnn" else "composition", seed=seed)
                m = fit(part, Path(out_dir) / model / f"n{n}" / f"seed{seed}", cfg, verbose=verbose, cache=cache)
                if verbose:
                    print(f"== {model} n_train {n} seed {seed}: test MAE {m.get('test_mae_all', float('nan')):.4f}",
                          flush=True)
                rows.append({"model": model, "n_train": n, "seed": seed, "test_mae": m.get("test_mae_all"),
                             "val_n": len(splits["val"]), "test_n": m.get("test_n_all"),
                             "best_epoch": m.get("best_epoch"), "train_seconds": m.get("train_seconds")})
    return pd.DataFrame(rows)


def power_law_fit(curve: pd.DataFrame, model: str = "cgcnn") -> dict | None:
    """MAE = a · n^(-b) fitted on log-log axes to one model's seed means; None with fewer than 2 sizes."""
    agg = curve[curve["model"] == model].groupby("n_train")["test_mae"].mean()
    if len(agg) < 2:
        return None
    slope, intercept = np.polyfit(np.log(agg.index.to_numpy(float)), np.log(agg.to_numpy(float)), 1)
    at = CGCNN_PAPER["n_train"]
    return {"exponent": float(-slope), "prefactor": float(np.exp(intercept)),
            "extrapolated_mae_at_paper_n": float(np.exp(intercept) * at ** slope), "paper_n": at,
            "paper_mae": CGCNN_PAPER["mae"]}


# ---- report ------------------------------------------------------------------------------------
def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _fmt(mean, std, digits=3):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def coverage(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for name, df in splits.items():
        st = df["structure_status"].value_counts()
        rows.append({"split": name, "rows": len(df), "structure referenced": int((df["structure_status"] != "none").sum()),
                     "structure available offline": int(st.get("ok", 0)),
                     "structure missing offline": int(st.get("missing", 0)), "composition only": int(st.get("none", 0))})
    out = pd.DataFrame(rows)
    total = out.drop(columns="split").sum()
    out = pd.concat([out, pd.DataFrame([{"split": "total", **total.to_dict()}])], ignore_index=True)
    share = out["structure available offline"] / out["structure referenced"].where(out["structure referenced"] > 0)
    out["usable share of referenced"] = [f"{100 * v:.0f} %" if pd.notna(v) else "—" for v in share]
    return out


def make_figures(fig_dir: Path, dataset: str, table: pd.DataFrame, weights: pd.DataFrame,
                 fraction: pd.DataFrame | None) -> dict[str, str]:
    """Draw the report's figures into ``fig_dir``: Table 1 MAE bars with the paper's values, composition
    weights (when ``weights`` has ``w_c``) and MAE versus structure fraction (when given).

    Args:
        fig_dir: the figure folder, created if missing.
        dataset: the dataset name (picks the paper's values).
        table: the :func:`summarize_table1` frame.
        weights: the weight tables of the bimodal modes with a ``mode`` column.
        fraction: the :func:`run_fraction_study` frame, or None.

    Returns:
        Figure key (``table1``, ``weights``, ``fraction``) → path relative to the report folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    paper = PAPER_TABLE1.get(dataset, {})
    fig, ax = plt.subplots(figsize=(7, 3.8))
    modes = [m for m in MODES if m in set(table["mode"])]
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        sub = table[(table["mode"] == mode) & table["subset"].isin(SUBSETS)].set_index("subset").reindex(SUBSETS)
        x = np.arange(len(SUBSETS)) + (i - (len(modes) - 1) / 2) * width
        ax.bar(x, sub["mean"], width, yerr=sub["std"], capsize=3, label=f"ours: {MODE_LABELS[mode]}")
        if mode in paper:
            ax.scatter(x, [paper[mode][k][0] for k in SUBSETS], marker="_", s=300, color="k", zorder=3,
                       label="paper" if i == 0 else None)
    ax.set_xticks(np.arange(len(SUBSETS)), ["all", "without structure", "with structure"])
    ax.set_ylabel(f"test MAE ({dataset})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "table1_mae.png", dpi=130)
    plt.close(fig)
    files["table1"] = "figures/table1_mae.png"
    if len(weights) and "w_c" in weights:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        bins = np.linspace(0, 1, 41)
        for mode, grp in weights.groupby("mode", sort=False):
            seen = grp["present"].astype(str).str.lower().isin(["true", "1"])
            if seen.any():
                ax.hist(grp.loc[seen, "w_c"], bins=bins, alpha=0.55, density=True,
                        label=f"{MODE_LABELS[mode]}: rows with structure (n={int(seen.sum())})")
        n_without = int((~weights["present"].astype(str).str.lower().isin(["true", "1"])).sum())
        ax.axvline(1.0, color="k", ls="--", lw=1, label=f"rows without structure: w_c = 1 (n={n_without})")
        ax.set_xlabel("composition weight w_c (test rows, all seeds)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(fig_dir / "composition_weights.png", dpi=130)
        plt.close(fig)
        files["weights"] = "figures/composition_weights.png"
    if fraction is not None and len(fraction):
        files["fraction"] = fraction_figure(fig_dir, fraction)
    return files


def fraction_figure(fig_dir: Path, fraction: pd.DataFrame) -> str:
    """Test MAE versus the share of structures kept; returns the path relative to the report folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    agg = fraction.groupby("fraction")["test_mae"].agg(["mean", "std"]).reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(100 * agg["fraction"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3)
    ax.set_xlabel("rows that keep their structure (%)")
    ax.set_ylabel("test MAE (eV/atom)")
    ax.set_title("MP formation energy, bimodal + augmentation")
    fig.tight_layout()
    fig.savefig(fig_dir / "mae_vs_structure_fraction.png", dpi=130)
    plt.close(fig)
    return "figures/mae_vs_structure_fraction.png"


def learning_curve_figure(fig_dir: Path, curve: pd.DataFrame, fit_: dict | None) -> str:
    """Log-log test MAE versus training-set size, with the CGCNN paper's point and our power-law fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for model, grp in curve.groupby("model", sort=False):
        agg = grp.groupby("n_train")["test_mae"].agg(["mean", "std"]).reset_index()
        label = {"cgcnn": "ours: de-CGCNN (structure only)", "roost": "ours: Roost (composition only)"}.get(model, model)
        ax.errorbar(agg["n_train"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3, label=label)
    if fit_:
        n = np.geomspace(curve["n_train"].min(), CGCNN_PAPER["n_train"], 50)
        ax.plot(n, fit_["prefactor"] * n ** -fit_["exponent"], ls=":", color="C0",
                label=f"power-law fit, exponent {fit_['exponent']:.2f}")
    ax.scatter([CGCNN_PAPER["n_train"]], [CGCNN_PAPER["mae"]], marker="*", s=120, color="k", zorder=3,
               label="CGCNN paper (28,046 train, MP)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training crystals")
    ax.set_ylabel("test MAE (eV/atom)")
    ax.set_title("MP formation energy per atom")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "learning_curve.png", dpi=130)
    plt.close(fig)
    return "figures/learning_curve.png"


def reproduce(dataset: str = "band_gap", *, quick: bool = False, out=None, runs=None, seeds=None, epochs=None,
              weight_decay=None, data_root=None, fraction_study: bool = True, verbose: bool = True,
              train: bool = True) -> dict:
    """Train (or read back) the three modes over seeds, analyse them and write the report.

    Writes ``out/report.md``, ``out/report.json`` and ``out/figures/*.png``.

    Args:
        dataset: the COSNet dataset name.
        quick: train on small subsets for 2 epochs (minutes, for CI); its numbers are not results.
        out: the report folder (default ``reports/cosnet/<dataset>``, ``reports/cosnet-quick/<dataset>`` in quick
            mode).
        runs: the runs' folder (default ``runs/cosnet`` or ``runs/cosnet-quick``).
        seeds: the number of seeds (seeds 0 … seeds-1); None takes the mode's default.
        epochs, weight_decay: training settings; None takes the mode's defaults.
        data_root: the shared data folder (default: the configured one).
        fraction_study: also run :func:`run_fraction_study`.
        verbose: print a line per run.
        train: False reports the finished Table-1 runs only and lists the others as not finished.

    Returns:
        The report's JSON dict.

    Raises:
        ValueError: an unknown dataset.
    """
    import platform
    import sys

    from cosynth.data.cosnet_splits import DATASETS, OUTPUT_RELU, UNITS, mp_id_coverage

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    t0 = time.perf_counter()
    defaults = QUICK if quick else FULL
    seeds = list(range(seeds if seeds is not None else defaults["seeds"]))
    epochs = epochs or defaults["epochs"]
    weight_decay = defaults["weight_decay"] if weight_decay is None else weight_decay
    out = Path(out or (Path("reports/cosnet-quick") if quick else Path("reports/cosnet")) / dataset)
    runs = Path(runs or ("runs/cosnet-quick" if quick else "runs/cosnet"))
    config = FitConfig(epochs=epochs, weight_decay=weight_decay, threads=1, batch_size=defaults["batch_size"],
                       nonneg=OUTPUT_RELU.get(dataset))
    splits = subsample(load_splits(dataset, data_root), defaults["max_train"])
    cov = coverage(splits)
    listed = run_table1(dataset, runs / dataset, seeds=seeds, config=config, data_root=data_root,
                        max_train=defaults["max_train"], verbose=verbose, train=train)
    runs_df = finished_runs(listed)
    unfinished = listed.loc[~listed.index.isin(runs_df.index), ["mode", "seed"]].to_dict(orient="records")
    table = summarize_table1(runs_df)
    align = summarize_alignment(runs / dataset, runs_df)
    weights = weight_table(runs / dataset, runs_df)
    both = [weight_table(runs / dataset, runs_df, m).assign(mode=m) for m in ("bimodal_aug", "bimodal")]
    both = pd.concat([w for w in both if len(w)], ignore_index=True) if any(len(w) for w in both) else pd.DataFrame()
    fraction = None
    if fraction_study:
        fraction = run_fraction_study(runs / "mp_formation_energy", fractions=defaults["fractions"],
                                      seeds=range(defaults["fraction_seeds"]),
                                      config=replace(config, epochs=defaults["fraction_epochs"]),
                                      data_root=data_root, max_rows=defaults["fraction_rows"], verbose=verbose)
    files = make_figures(out / "figures", dataset, table, both, fraction)
    train_seconds = float(runs_df["train_seconds"].sum())
    fraction_seconds = 0.0 if fraction is None else float(fraction["train_seconds"].fillna(0).sum())
    prob_path = runs / dataset / "composition" / f"seed{seeds[0]}" / "problems.csv"
    problems = pd.read_csv(prob_path) if prob_path.exists() else pd.DataFrame(columns=["action", "error"])
    w_stats = {}
    if len(weights) and "w_c" in weights:
        seen = weights["present"].astype(str).str.lower().isin(["true", "1"])
        w_stats = {"with_structure": {"mean": float(weights.loc[seen, "w_c"].mean()), "n": int(seen.sum())},
                   "without_structure": {"mean": float(weights.loc[~seen, "w_c"].mean()), "n": int((~seen).sum())}}
    result = {
        "dataset": dataset, "unit": UNITS[dataset], "quick": quick,
        "command": "cosynth reproduce cosnet " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["reproduce", "cosnet"]
        else f"cosynth reproduce cosnet --dataset {dataset}" + (" --quick" if quick else ""),
        "config": asdict(config), "seeds": seeds, "coverage": cov.to_dict(orient="records"),
        "distinct_mp_ids": mp_id_coverage(splits) if dataset != "li_conductivity" else None,
        "constant_baseline": constant_baseline(splits),
        "usable_breakdown": usable_breakdown(runs / dataset, runs_df, splits),
        "table1": table.to_dict(orient="records"), "paper_table1": PAPER_TABLE1.get(dataset),
        "alignment_r2": align.to_dict(orient="records"), "paper_alignment_r2": PAPER_TABLE2,
        "paired_deltas": {m: paired_deltas(runs_df, m).to_dict(orient="records") for m in ("bimodal_aug", "bimodal")
                          if (runs_df["mode"] == m).any() and (runs_df["mode"] == "composition").any()},
        "composition_weight": w_stats, "runs": runs_df.to_dict(orient="records"), "unfinished_runs": unfinished,
        "fraction_study": None if fraction is None else fraction.to_dict(orient="records"),
        "problems": {"count_by_action": problems["action"].value_counts().to_dict(),
                     "rows": problems.head(50).to_dict(orient="records")},
        "train_seconds_total": round(train_seconds, 1), "fraction_study_train_seconds": round(fraction_seconds, 1),
        "wall_seconds_this_command": round(time.perf_counter() - t0, 1),
        "figures": files, "python": sys.version.split()[0], "platform": platform.platform(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(result, table, align, cov, fraction))
    return result


QUICK = dict(seeds=2, epochs=2, weight_decay=1e-4, max_train=120, batch_size=32, fractions=(0.0, 1.0),
             fraction_seeds=1, fraction_epochs=2, fraction_rows=120)
FULL = dict(seeds=5, epochs=60, weight_decay=1e-4, max_train=None, batch_size=128,
            fractions=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), fraction_seeds=3, fraction_epochs=30, fraction_rows=1000)


def render_markdown(r: dict, table: pd.DataFrame, align: pd.DataFrame, cov: pd.DataFrame, fraction) -> str:
    """The report's Markdown.

    Args:
        r: the report's JSON dict.
        table: the :func:`summarize_table1` frame.
        align: the alignment R² frame.
        cov: the structure coverage frame.
        fraction: the :func:`run_fraction_study` frame, or None.

    Returns:
        The Markdown text.
    """
    ds, unit = r["dataset"], r["unit"]
    paper = r["paper_table1"] or {}
    lines = [f"# COSNet reproduction — {ds}" + (" (QUICK MODE: smoke test, not results)" if r["quick"] else ""), ""]
    cfg = r["config"]
    relu = {None: "ReLU output when every training target is ≥ 0 (reference)", True: "ReLU output",
            False: "no ReLU output (see cosynth.data.cosnet_splits.OUTPUT_RELU)"}[cfg.get("nonneg")]
    lines += [f"Command: `{r['command']}`  ", f"Seeds: {r['seeds']}; epochs: {cfg['epochs']} (paper: 200; reference "
              f"code default 100); Adamax lr {cfg['lr']}, weight decay {cfg['weight_decay']}, decay {cfg['lr_decay']}, "
              f"batch {cfg['batch_size']}; sum fusion, scalar weights; {relu}.  ",
              f"Training time (sum over the {len(r['runs'])} Table-1 runs, one CPU thread): "
              f"{r['train_seconds_total'] / 60:.1f} min; structure-fraction study: {r['fraction_study_train_seconds'] / 60:.1f} min; "
              f"this command (reusing finished runs): {r['wall_seconds_this_command'] / 60:.1f} min.", ""]
    if r.get("unfinished_runs"):
        lines += ["**Not finished when this report was written** (left out of every mean below): "
                  + ", ".join(f"{MODE_LABELS[u['mode']]} seed {u['seed']}" for u in r["unfinished_runs"]) + ".", ""]
    lines += ["## Data we actually had", "", _md_table(cov), ""]
    if r.get("distinct_mp_ids"):
        ids = r["distinct_mp_ids"]
        lines += [f"Distinct MP ids referenced: {ids['referenced']}; with a CIF offline (`mp_synth_structures` + "
                  f"`mp_extra_structures`): {ids['with_cif']}.", ""]
    probs = r["problems"]["count_by_action"]
    if probs:
        lines += ["Rows with problems (reported per row in report.json and the runs' problems.csv): "
                  + ", ".join(f"{n} {a}" for a, n in probs.items()) + ".", ""]
    if paper:
        n = paper["n"]
        ours = cov[cov["split"] == "total"].iloc[0]
        lines += [f"Rows: ours {int(ours['rows'])} ({int(ours['structure referenced'])} with a structure referenced, "
                  f"{int(ours['structure available offline'])} available offline); paper {n['all']} "
                  f"({n['with_structure']} with a structure)."
                  + (" The Li-conductivity CSV (uploaded after the paper) has no split: we draw a composition-"
                     "disjoint 60/20/20 split with seed 0 and keep every row (all temperatures)."
                     if ds == "li_conductivity" else ""), "",
                  "Rows whose structure is referenced "
                  "but not available offline (ICSD codes; MP ids in neither `mp_synth_structures` nor "
                  "`mp_extra_structures`) are composition-only "
                  "for our models; the *with structure* subset below follows the paper's definition (structure "
                  "referenced), and *with structure usable here* is the subset our models could actually use.", ""]
    lines += [f"## Table 1 analogue: test MAE ({unit or 'no unit'}), mean ± std over seeds", "",
              "| subset | n (ours) | " + " | ".join(f"{MODE_LABELS[m]} (ours)" + (" / paper" if paper else "")
                                                   for m in MODES) + " |",
              "|---|---|" + "---|" * len(MODES)]
    for key in [*SUBSETS, "with_structure_available", "with_structure_missing_offline"]:
        if not (table["subset"] == key).any():
            continue
        cells, n = [], ""
        for mode in MODES:
            row = table[(table["mode"] == mode) & (table["subset"] == key)]
            if not len(row):
                cells.append("—")
                continue
            n = int(row["n"].iloc[0])
            cell = _fmt(row["mean"].iloc[0], row["std"].iloc[0])
            if paper and key in SUBSETS and mode in paper:
                pm, ps = paper[mode][key]
                cell += " / " + (_fmt(pm, ps) if pm < 10 else f"{pm:.0f} ± {ps:.0f}")
            cells.append(cell)
        label = SUBSET_LABELS.get(key, key.replace("_", " "))
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    base = r.get("constant_baseline") or []
    if base:
        lines += ["", f"Constant baseline (every test row predicted as the training median, {base[0]['train_median']:.3g}): "
                  + "; ".join(f"{SUBSET_LABELS.get(b['subset'], b['subset'].replace('_', ' '))} {b['mae']:.3f}"
                              for b in base) + "."]
    for mode in ("bimodal_aug", "bimodal"):
        deltas = r.get("paired_deltas", {}).get(mode) or []
        if not deltas:
            continue
        lines += ["", f"### {MODE_LABELS[mode]} minus composition only, same seed (negative: the structure helps)", "",
                  "| subset | n | Δ test MAE (mean ± std) | seeds where it wins |", "|---|---|---|---|"]
        for d in deltas:
            lines.append(f"| {SUBSET_LABELS.get(d['subset'], d['subset'].replace('_', ' '))} | {d['n']} | "
                         f"{d['delta_mean']:+.3f} ± {d['delta_std']:.3f} | {d['wins']} of {d['seeds']} |")
    parts = r.get("usable_breakdown") or []
    if parts:
        lines += ["", "### Test rows with a structure the model saw: bimodal + augmentation minus composition only", "",
                  "| split by | group | n | composition only | bimodal + augmentation | Δ (mean ± std) | seeds where it wins |",
                  "|---|---|---|---|---|---|---|"]
        for b in parts:
            lines.append(f"| {b['kind']} | {b['group']} | {b['n']} | {b['mae_composition']:.3f} | {b['mae_bimodal_aug']:.3f} | "
                         f"{b['delta_mean']:+.3f} ± {b['delta_std']:.3f} | {b['wins']} of {b['seeds']} |")
    lines += ["", "## Table 2 analogue: representation alignment", "",
              "R² on test rows with a structure of a linear regression from the composition representation C to "
              "volume per atom, fitted on the training rows with a structure (paper: Li conductivity).", "",
              "| mode | R² (ours) | paper (Li conductivity) |", "|---|---|---|"]
    for _, row in align.iterrows():
        pm, ps = PAPER_TABLE2.get(row["mode"], (float("nan"), float("nan")))
        lines.append(f"| {MODE_LABELS[row['mode']]} | {_fmt(row['mean'], row['std'])} | {_fmt(pm, ps)} |")
    w = r["composition_weight"]
    if w:
        lines += ["", "## Composition weight w_c (bimodal + augmentation, test rows, all seeds)", "",
                  f"Mean w_c: {w['with_structure']['mean']:.3f} on {w['with_structure']['n']} rows with a structure, "
                  f"{w['without_structure']['mean']:.3f} on {w['without_structure']['n']} rows without (always 1 "
                  "by construction).", ""]
    lines.append("")
    for key, title in (("table1", "Test MAE"), ("weights", "Composition weights"), ("fraction", "MAE vs structure fraction")):
        if key in r["figures"]:
            lines += [f"![{title}]({r['figures'][key]})", ""]
    if fraction is not None and len(fraction):
        lines += _fraction_lines(fraction, "MP formation energy, `mp_synth_structures`, Faber 2015 subset",
                                 "Every split keeps the given share of its structures (seeded); bimodal + augmentation.")
        lines.append("")
    return "\n".join(lines) + "\n"


MP_MODEL_WORDS = {"roost": "composition only (Roost)", "cgcnn": "structure only (de-CGCNN)"}


def _fraction_against_curve(fraction: pd.DataFrame, curve: pd.DataFrame) -> list[str]:
    """The fraction study beside the single-modality models trained on the same full training set."""
    agg = fraction.groupby("fraction")["test_mae"].mean()
    full = curve[curve["n_train"] == curve["n_train"].max()].groupby("model")["test_mae"].mean()
    if 0.0 not in agg.index or 1.0 not in agg.index:
        return []
    refs = ", ".join(f"{MP_MODEL_WORDS.get(m, m)} {v:.4f}" for m, v in full.items())
    return [f"From no structures to all of them the test MAE changes by {agg[1.0] - agg[0.0]:+.4f} eV/atom "
            f"({agg[0.0]:.4f} → {agg[1.0]:.4f}). Single-modality models on the same "
            f"{int(curve['n_train'].max())} training rows (learning curve above): {refs}."]


def _fraction_lines(fraction: pd.DataFrame, what: str, how: str) -> list[str]:
    """The Markdown table of test MAE per structure fraction (mean ± std over seeds)."""
    agg = fraction.groupby("fraction")["test_mae"].agg(["mean", "std", "count"]).reset_index()
    lines = [f"## Test MAE versus structure fraction ({what})", "", how, "",
             "| structures kept | test MAE (eV/atom) | seeds |", "|---|---|---|"]
    for _, row in agg.iterrows():
        lines.append(f"| {100 * row['fraction']:.0f} % | {row['mean']:.4f}"
                     + (f" ± {row['std']:.4f}" if row["count"] > 1 else "") + f" | {int(row['count'])} |")
    return lines


def reproduce_mp(*, out=None, runs=None, sizes=(1000, 3000, None), seeds=(0,), models=("cgcnn", "roost"),
                 epochs: int = 40, weight_decay: float = 1e-4, fractions=(), fraction_seeds=(0,),
                 max_rows: int | None = None, data_root=None, verbose: bool = True) -> dict:
    """The MP formation-energy studies: the de-CGCNN learning curve against the CGCNN paper, and (when
    ``fractions`` is given) test MAE versus structure fraction on the same pooled rows, which all have a
    structure. Writes ``out/report.md``, ``out/report.json`` and ``out/figures/*.png``.

    Args:
        out: the report folder (default ``reports/cosnet/mp_formation_energy``).
        runs: the runs' folder (default ``runs/cosnet/mp_formation_energy_pooled``; finished runs are reused).
        sizes: training-set sizes of the learning curve; None is every training row.
        seeds: seeds per size.
        models: ``cgcnn`` and/or ``roost``.
        epochs, weight_decay: training settings (Adamax, lr 1e-2, decay 0.96, batch 128 otherwise).
        fractions: shares of structures kept for the fraction study (empty: no fraction study).
        fraction_seeds: seeds of the fraction study.
        max_rows: at most this many rows before the split (quick runs), or None for all.
        data_root: the shared data folder (default: the configured one).
        verbose: print a line per run.

    Returns:
        The report's JSON dict.
    """
    import sys

    from cosynth.data.cosnet_splits import load_mp_property, mp_property_rows

    t0 = time.perf_counter()
    out = Path(out or "reports/cosnet/mp_formation_energy")
    runs = Path(runs or "runs/cosnet/mp_formation_energy_pooled")
    config = FitConfig(epochs=epochs, weight_decay=weight_decay, threads=1)
    holdout = 0.1
    splits = load_mp_property(config_data_root(data_root), source=None, holdout=holdout, extra=True,
                              max_rows=max_rows)
    eras = mp_property_rows(config_data_root(data_root), "formation_energy_per_atom", None, extra=True)
    curve = run_learning_curve(runs / "learning_curve", sizes=sizes, seeds=seeds, models=models, config=config,
                               data_root=data_root, holdout=holdout, max_rows=max_rows, verbose=verbose)
    fit_ = power_law_fit(curve)
    fraction = None
    if fractions:
        fraction = run_fraction_study(runs / "fraction", fractions=fractions, seeds=fraction_seeds, config=config,
                                      data_root=data_root, max_rows=max_rows, source=None, holdout=holdout, extra=True,
                                      verbose=verbose)
    files = {"learning_curve": learning_curve_figure(out / "figures", curve, fit_)}
    if fraction is not None:
        files["fraction"] = fraction_figure(out / "figures", fraction)
    result = {
        "command": "cosynth " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else "cosynth reproduce cosnet-mp",
        "config": asdict(config), "rows": {k: len(v) for k, v in splits.items()}, "holdout": holdout,
        "rows_by_source": eras["structure_source"].value_counts().to_dict(), "max_rows": max_rows,
        "learning_curve": curve.to_dict(orient="records"), "power_law_fit": fit_, "cgcnn_paper": CGCNN_PAPER,
        "fraction_study": None if fraction is None else fraction.to_dict(orient="records"),
        "train_seconds_total": round(float(curve["train_seconds"].fillna(0).sum())
                                     + (0.0 if fraction is None else float(fraction["train_seconds"].fillna(0).sum())), 1),
        "wall_seconds_this_command": round(time.perf_counter() - t0, 1), "figures": files,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "report.md").write_text(render_mp_markdown(result, curve, fraction))
    return result


def render_mp_markdown(r: dict, curve: pd.DataFrame, fraction: pd.DataFrame | None) -> str:
    """The Markdown of :func:`reproduce_mp`."""
    paper, cfg = r["cgcnn_paper"], r["config"]
    rows = r["rows"]
    lines = ["# MP formation energy: de-CGCNN learning curve and structure-fraction study", "",
             f"Command: `{r['command']}`  ",
             "Data: every offline MP structure with a formation energy (`mp_synth_structures`, all eras, plus "
             "`mp_extra_structures`), one row per MP id ("
             + ", ".join(f"{k} {v}" for k, v in r["rows_by_source"].items())
             + f"), split at random (seed 0): {rows['train']} train / {rows['val']} validation / {rows['test']} test. Training sets are nested subsets of the training "
             "split; validation and test never change.  ",
             f"Training: {cfg['epochs']} epochs (best validation epoch kept), Adamax lr {cfg['lr']}, weight decay "
             f"{cfg['weight_decay']}, decay {cfg['lr_decay']}, batch {cfg['batch_size']}, one CPU thread. Summed "
             f"training time {r['train_seconds_total'] / 60:.1f} min.", "",
             "## Learning curve (test MAE, eV/atom)", "",
             "| model | training crystals | test MAE | seeds | best epoch | train time (s) |", "|---|---|---|---|---|---|"]
    for (model, n), grp in curve.groupby(["model", "n_train"], sort=False):
        vals = grp["test_mae"].to_numpy(float)
        mae = f"{vals.mean():.4f}" + (f" ± {vals.std():.4f}" if len(vals) > 1 else "")
        lines.append(f"| {model} | {n} | {mae} | {len(vals)} | {', '.join(str(int(e)) for e in grp['best_epoch'])} | "
                     f"{grp['train_seconds'].sum():.0f} |")
    lines += ["", f"CGCNN paper: {paper['mae']} eV/atom with {paper['n_train']:,} training crystals "
              f"({paper['source']}); the paper's Fig. 2(a) shows the error falling as a power law of the "
              "training-set size."]
    fit_ = r["power_law_fit"]
    if fit_:
        lines += [f"Our de-CGCNN points follow MAE ≈ {fit_['prefactor']:.3g} · n^(−{fit_['exponent']:.2f}); "
                  f"extrapolated to the paper's {fit_['paper_n']:,} training crystals this gives "
                  f"{fit_['extrapolated_mae_at_paper_n']:.3f} eV/atom (paper {fit_['paper_mae']}), and at the 600 "
                  f"training crystals of the earlier structure-fraction study (Faber 2015 subset) "
                  f"{fit_['prefactor'] * 600 ** -fit_['exponent']:.3f} eV/atom."]
    lines += ["", f"![learning curve]({r['figures']['learning_curve']})", ""]
    if fraction is not None and len(fraction):
        lines += _fraction_lines(fraction, "same rows, bimodal + augmentation",
                                 "Every split keeps the given share of its structures (seeded).")
        lines += ["", *_fraction_against_curve(fraction, curve), "", f"![fraction]({r['figures']['fraction']})", ""]
    return "\n".join(lines) + "\n"
