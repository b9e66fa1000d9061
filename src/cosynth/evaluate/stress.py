"""Does the model rely on a bias? Cross-evaluation on other sources' test sets and a sweep of
isotropic volume changes (the bias paper's swapped test sets and 55 % compression, Fig. 4).

A model that learned density keeps calling dense crystals "unsynthesizable" whatever they are:
compress real, synthesizable crystals and its recall collapses; a model that learned structure
should hold up far better. Every prediction is saved under the output folder and reused when
the command is run again, so an interrupted stress test resumes where it stopped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.evaluate.evaluate import evaluate_scores, predict_table
from cosynth.io.files import read_table, write_table

DEFAULT_FACTORS = (0.45, 0.6, 0.8, 0.9, 1.0, 1.1, 1.3)
METRIC_COLUMNS = ("roc_auc", "accuracy", "precision", "recall", "specificity", "f1")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))[:80]


def cache_fingerprint(model, table) -> str:
    """Short digest of what a cached prediction depends on besides E and seed: the model file
    (path, size, modification time) and the table's ids and structures, so a retrained model or
    an edited table under the same name is never served stale predictions."""
    import hashlib

    h = hashlib.sha1()
    if isinstance(model, (str, Path)):
        from cosynth.models.registry import resolve_model_path

        path = resolve_model_path(model)
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        h.update(f"in-memory:{id(model)}".encode())
    frame = table.frame
    h.update("|".join(frame["id"].astype(str)).encode())
    if "cif" in frame.columns:
        h.update(pd.util.hash_pandas_object(frame["cif"].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:12]


def _cached_predictions(cache: Path | None, key: str, compute) -> pd.DataFrame:
    path = None if cache is None else cache / f"{_slug(key)}.csv"
    if path is not None and path.exists():
        return read_table(path, text_columns=("id",))
    pred = compute()
    if path is not None:
        write_table(pred, path)
    return pred


def table_predictions(model_name: str, model, net, table_name: str, table, *, ensemble: int, seed: int,
                      threshold: float = 0.5, cache: Path | None = None, workers: int = 1) -> pd.DataFrame:
    """Predictions of one model on one table, read from ``cache`` when an earlier run (of any
    command using this key) already computed them.

    The cache key joins the names, ``ensemble``, ``seed`` and :func:`cache_fingerprint`.

    Args:
        model_name, table_name: names used in the cache key.
        model: the path or object the fingerprint is taken from.
        net: the loaded network.
        table: the CrystalTable.
        ensemble, seed, threshold: as in :func:`predict_table`.
        cache: the cache folder, or None for no cache.
        workers: image-building processes.

    Returns:
        The :func:`predict_table` frame.
    """
    key = f"{model_name}__{table_name}__E{ensemble}_s{seed}_{cache_fingerprint(model, table)}"
    return _cached_predictions(cache, key, lambda: predict_table(
        net, table, ensemble=ensemble, seed=seed, threshold=threshold, workers=workers))


def _load(models: dict, tables: dict):
    from cosynth.data.table import CrystalTable, read_table
    from cosynth.models.registry import load_model

    nets = {name: load_model(m) for name, m in models.items()}
    tabs = {name: (t if isinstance(t, CrystalTable) else read_table(t)) for name, t in tables.items()}
    return nets, tabs


def _metric_row(y, p, threshold) -> dict:
    ev = evaluate_scores(y, p, threshold=threshold, task="classification")
    m = ev["metrics"]
    row = {k: m.get(k) for k in METRIC_COLUMNS}
    row.update(n=m["n"], mean_likelihood_pos=ev["mean_likelihood"]["positive"],
               mean_likelihood_neg=ev["mean_likelihood"]["negative"], **m["confusion"])
    return row


def cross_evaluate(models: dict, tables: dict, label: str, *, ensemble: int = 20, seed: int = 0,
                   threshold: float = 0.5, out_dir=None, workers: int = 1) -> pd.DataFrame:
    """Every model on every labelled table: one row per (model, table) with all metrics.

    Args:
        models: name → model file or object.
        tables: name → CrystalTable or table path.
        label: the label column (every table must have it).
        ensemble, seed, threshold: as in :func:`predict_table`.
        out_dir: predictions are cached under ``out_dir/predictions``; None caches nothing.
        workers: image-building processes.

    Returns:
        A frame with model, table, the :data:`METRIC_COLUMNS`, n, mean likelihood per class and the confusion
        counts.

    Raises:
        ValueError: a table has no label column.
    """
    nets, tabs = _load(models, tables)
    cache = None if out_dir is None else Path(out_dir) / "predictions"
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for mname, net in nets.items():
        for tname, tab in tabs.items():
            if label not in tab.frame.columns:
                raise ValueError(f"table {tname!r} has no label column {label!r}")
            pred = table_predictions(mname, models[mname], net, tname, tab, ensemble=ensemble, seed=seed,
                                     threshold=threshold, cache=cache, workers=workers)
            rows.append({"model": mname, "table": tname,
                         **_metric_row(tab.frame[label].to_numpy(), pred["likelihood"].to_numpy(float), threshold)})
    return pd.DataFrame(rows)


def scaled_structures(structures, factor: float) -> list:
    """Copies with every cell volume multiplied by ``factor`` (fractional coordinates kept)."""
    out = []
    for s in structures:
        if s is None:
            out.append(None)
            continue
        c = s.copy()
        c.scale_lattice(c.volume * factor)
        out.append(c)
    return out


def volume_sweep(models: dict, table, label: str, *, factors=DEFAULT_FACTORS, ensemble: int = 20, seed: int = 0,
                 threshold: float = 0.5, out_dir=None, workers: int = 1,
                 table_name: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Metrics and mean likelihood per class for each model at each volume factor.

    Volume factor 0.45 is the paper's "55 % compression".

    Args:
        models: name → model file or object.
        table: a CrystalTable or table path.
        label: the label column.
        factors: volume factors (each cell volume is multiplied by it).
        ensemble, seed, threshold: as in :func:`predict_table`.
        out_dir: predictions are cached under ``out_dir/predictions``; None caches nothing.
        workers: image-building processes.
        table_name: with it, factor 1.0 reuses (and fills) the cache entry that :func:`cross_evaluate`
            uses for that table under that name, so the unscaled predictions are computed once.

    Returns:
        The table of rows (model, volume_factor, metrics…) and {"labels", "density": factor → densities}:
        the densities before and after each scaling (for the figures).

    Raises:
        ValueError: no label column.
    """
    nets, tabs = _load(models, {"table": table})
    tab = tabs["table"]
    if label not in tab.frame.columns:
        raise ValueError(f"no label column {label!r}")
    cache = None if out_dir is None else Path(out_dir) / "predictions"
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    base = tab.structures()
    y = tab.frame[label].to_numpy()
    densities = {}
    rows = []
    for f in factors:
        scaled = scaled_structures(base, f)
        densities[float(f)] = [s.density if s is not None else np.nan for s in scaled]
        for mname, net in nets.items():
            if f == 1.0 and table_name is not None:  # the unscaled table: share cross_evaluate's cache entry
                pred = table_predictions(mname, models[mname], net, table_name, tab, ensemble=ensemble, seed=seed,
                                         threshold=threshold, cache=cache, workers=workers)
                rows.append({"model": mname, "volume_factor": 1.0,
                             **_metric_row(y, pred["likelihood"].to_numpy(float), threshold)})
                continue
            key = f"{mname}__volume{f:g}__E{ensemble}_s{seed}_{cache_fingerprint(models[mname], tab)}"
            pred = _cached_predictions(cache, key, lambda net=net, tab=tab, scaled=scaled: predict_table(
                net, tab, structures=scaled, ensemble=ensemble, seed=seed, threshold=threshold, workers=workers))
            rows.append({"model": mname, "volume_factor": float(f),
                         **_metric_row(y, pred["likelihood"].to_numpy(float), threshold)})
    return pd.DataFrame(rows), {"labels": y.tolist(), "density": densities}


def write_cross(df: pd.DataFrame, out_dir, title: str = "Cross-evaluation") -> None:
    """Write ``cross_evaluation.json``, a heat-map figure and ``cross_evaluation.html`` to ``out_dir``.

    Args:
        df: the :func:`cross_evaluate` frame.
        out_dir: output folder, created if missing.
        title: the page title.
    """
    from cosynth.io.files import atomic_write_json
    from cosynth.report.html import HtmlReport

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cross_evaluation.json", {"rows": df.to_dict("records")})
    page = HtmlReport(title)
    page.paragraph("Every model on every labelled table (the bias paper's swapped test sets). A model that learned "
                   "its training source's bias loses specificity or recall on the other source.")
    page.table(df[["model", "table", "n", *METRIC_COLUMNS, "mean_likelihood_pos", "mean_likelihood_neg"]])
    import matplotlib.pyplot as plt

    metrics = [m for m in ("accuracy", "recall", "specificity", "roc_auc") if df[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        mat = df.pivot(index="model", columns="table", values=m).astype(float)
        im = ax.imshow(mat.to_numpy(), vmin=0, vmax=1, cmap="RdYlGn")
        ax.set_xticks(range(mat.shape[1]), mat.columns, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(mat.shape[0]), mat.index, fontsize=7)
        for (i, j), v in np.ndenumerate(mat.to_numpy()):
            ax.text(j, i, "–" if v != v else f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_title(m, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.7)
    fig.savefig(out / "figures" / "cross_evaluation.png", dpi=110, bbox_inches="tight")
    page.figure(fig, "rows: models, columns: test tables")
    page.json_block(df.to_dict("records"))
    page.write(out / "cross_evaluation.html")


def write_sweep(df: pd.DataFrame, densities: dict, out_dir, title: str = "Volume sweep") -> None:
    """Write ``volume_sweep.json``, the figures and ``volume_sweep.html`` to ``out_dir``.

    Args:
        df: the rows of :func:`volume_sweep`.
        densities: the densities of :func:`volume_sweep`.
        out_dir: output folder, created if missing.
        title: the page title.
    """
    from cosynth.io.files import atomic_write_json
    from cosynth.report import figures
    from cosynth.report.html import HtmlReport

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "volume_sweep.json", {"rows": df.to_dict("records"),
                                           "density_mean": {str(f): float(np.nanmean(d))
                                                            for f, d in densities["density"].items()}})
    page = HtmlReport(title)
    page.paragraph("Every structure scaled isotropically by the volume factor (0.45 = the paper's 55 % compression) "
                   "and predicted again. A model that learned density calls compressed synthesizable crystals "
                   "negative: its recall falls with the volume.")
    page.table(df[["model", "volume_factor", "n", *METRIC_COLUMNS, "mean_likelihood_pos", "mean_likelihood_neg"]])
    for metric in ("recall", "specificity", "accuracy"):
        series = {m: g.sort_values("volume_factor")[metric].astype(float).to_numpy() for m, g in df.groupby("model")}
        x = sorted(df["volume_factor"].unique())
        fig = figures.curves(x, series, "volume factor", metric, f"{metric} vs volume", hline=None)
        fig.savefig(out / "figures" / f"sweep_{metric}.png", dpi=110, bbox_inches="tight")
        page.figure(fig, f"{metric} per volume factor")
    series = {}
    for m, g in df.groupby("model"):
        g = g.sort_values("volume_factor")
        series[f"{m}: positives"] = g["mean_likelihood_pos"].astype(float).to_numpy()
        series[f"{m}: negatives"] = g["mean_likelihood_neg"].astype(float).to_numpy()
    fig = figures.curves(sorted(df["volume_factor"].unique()), series, "volume factor", "mean likelihood",
                         "mean likelihood per class", hline=0.5)
    fig.savefig(out / "figures" / "sweep_likelihood.png", dpi=110, bbox_inches="tight")
    page.figure(fig, "mean likelihood of positive and negative crystals per volume factor")
    y = np.asarray(densities["labels"])
    import matplotlib.pyplot as plt

    factors = sorted(densities["density"])
    shown = [f for f in (1.0, min(factors)) if f in densities["density"]]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.2), squeeze=False)
    for ax, f in zip(axes[0], shown):
        d = np.asarray(densities["density"][f], float)
        figures.overlay(ax, {1: d[y == 1], 0: d[y == 0]}, "density (g/cm³)", f"volume factor {f:g}")
    fig.tight_layout()
    fig.savefig(out / "figures" / "sweep_density.png", dpi=110, bbox_inches="tight")
    page.figure(fig, "density distributions before and after the strongest compression (paper Fig. 2e)")
    page.json_block(df.to_dict("records"))
    page.write(out / "volume_sweep.html")
