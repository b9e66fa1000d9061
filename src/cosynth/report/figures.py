"""matplotlib figures shared by the audit, evaluation and stress reports (Agg, no display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CLASS_COLORS = {1: "#1f77b4", 0: "#d62728"}
CLASS_NAMES = {1: "positive (synthesizable)", 0: "negative"}


def _finite(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x[np.isfinite(x)]


def overlay(ax, groups: dict, xlabel: str, title: str = "", bins: int = 40, kde: bool = True) -> None:
    """Overlaid normalised histograms (+ Gaussian KDE) of several groups on shared bins.

    The bins span the 0.5–99.5 percentiles of all values; values beyond are clipped into the end bins.
    Class keys 1 and 0 get the class colours and names.

    Args:
        ax: the matplotlib axes to draw on.
        groups: group key → values (non-finite values are dropped).
        xlabel, title: axis label; panel title (none if empty).
        bins: the number of bins.
        kde: also draw a KDE for groups with more than 2 distinct values.
    """
    from scipy.stats import gaussian_kde

    data = {k: _finite(v) for k, v in groups.items()}
    allv = np.concatenate([v for v in data.values() if len(v)]) if any(len(v) for v in data.values()) else np.zeros(0)
    if len(allv) == 0:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = np.percentile(allv, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    grid = np.linspace(lo, hi, 200)
    for i, (key, v) in enumerate(data.items()):
        color = CLASS_COLORS.get(key, f"C{i}")
        name = CLASS_NAMES.get(key, str(key))
        if len(v) == 0:
            continue
        ax.hist(np.clip(v, lo, hi), bins=edges, density=True, alpha=0.35, color=color,
                label=f"{name} (n={len(v)})")
        if kde and len(v) > 2 and np.ptp(v) > 0:
            ax.plot(grid, gaussian_kde(v)(grid), color=color, lw=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density of rows")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def class_panels(values, labels, sources, xlabel: str, title: str, max_panels: int = 6):
    """Paper Fig. 2 style: class-conditional distributions for all rows, then per source.

    Args:
        values: the descriptor per row.
        labels: class per row (1 or 0).
        sources: source per row, or None for the all-rows panel only.
        xlabel, title: axis label; figure title.
        max_panels: the most panels; the largest sources are shown.

    Returns:
        The matplotlib figure.
    """
    values, labels = np.asarray(values, float), np.asarray(labels)
    panels = [("all rows", np.ones(len(values), bool))]
    if sources is not None:
        src = np.asarray(sources)
        names, counts = np.unique(src, return_counts=True)
        for name in names[np.argsort(-counts)][: max_panels - 1]:
            panels.append((f"source: {name}", src == name))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, mask) in zip(axes[0], panels):
        overlay(ax, {1: values[mask & (labels == 1)], 0: values[mask & (labels == 0)]}, xlabel, name)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def roc_figure(curves: dict, title: str = "ROC"):
    """curves: name → (fpr, tpr, auc)."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for i, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        ax.plot(fpr, tpr, color=f"C{i}", label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def likelihood_histogram(p, y, threshold: float = 0.5, title: str = "Likelihood per class"):
    """Paper Fig. 3c–f: predicted likelihood of the positive and negative test crystals.

    Args:
        p: likelihoods (non-finite ones are left out).
        y: class per crystal (1 or 0).
        threshold: drawn as a dashed line.
        title: the figure title.

    Returns:
        The matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    p, y = np.asarray(p, float), np.asarray(y)
    edges = np.linspace(0, 1, 26)
    for cls in (1, 0):
        v = p[(y == cls) & np.isfinite(p)]
        ax.hist(v, bins=edges, alpha=0.5, color=CLASS_COLORS[cls], label=f"{CLASS_NAMES[cls]} (n={len(v)})")
    ax.axvline(threshold, color="k", ls="--", lw=1)
    ax.set_xlabel("synthesizability likelihood")
    ax.set_ylabel("crystals")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def learning_curves(history, title: str = "Learning curves"):
    """Loss and accuracy per epoch from a training run's history table (Fig. 3a–b)."""
    cols = history.columns
    metrics = [m for m in ("loss", "acc", "auc") if any(c.endswith(m) for c in cols)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for c in cols:
            if c.endswith(m) and c != "epoch":
                ax.plot(history["epoch"], history[c], marker=".", label=c)
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def curves(x, series: dict, xlabel: str, ylabel: str, title: str, hline: float | None = None):
    """Simple line plot: series name → y values over x.

    Args:
        x: the x values, shared by all series.
        series: name → y values.
        xlabel, ylabel, title: axis labels and title.
        hline: draw a dotted horizontal line at this y, or None.

    Returns:
        The matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, (name, yv) in enumerate(series.items()):
        ax.plot(x, yv, marker="o", color=f"C{i}", label=name)
    if hline is not None:
        ax.axhline(hline, color="grey", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reliability_diagram(y, p, bins: int = 10, title: str = "Reliability"):
    """Observed positive rate against mean likelihood per equal-width bin, with the bin counts.

    Args:
        y: labels (0/1).
        p: likelihoods in [0, 1].
        bins: number of bins.
        title: the figure's title.

    Returns:
        The matplotlib figure.
    """
    y, p = np.asarray(y, float), np.clip(np.asarray(p, float), 0, 1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    mean_p = [p[which == b].mean() for b in range(bins) if (which == b).any()]
    rate = [y[which == b].mean() for b in range(bins) if (which == b).any()]
    counts = [int((which == b).sum()) for b in range(bins)]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.plot(mean_p, rate, "o-", c=CLASS_COLORS[1])
    ax.set_ylabel("observed positive rate")
    ax.set_title(title)
    bx.bar((edges[:-1] + edges[1:]) / 2, counts, width=1 / bins * 0.9, color="grey")
    bx.set_xlabel("likelihood")
    bx.set_ylabel("rows")
    fig.tight_layout()
    return fig


def grouped_bars(table, title: str, ylabel: str, hline: float | None = None):
    """Bars per row group (e.g. origin) and series (e.g. model) of a DataFrame: index × columns.

    Args:
        table: a DataFrame whose index names the groups and whose columns name the series.
        title, ylabel: the figure's title and y label.
        hline: a reference line (e.g. 0.5 for chance), or None.

    Returns:
        The matplotlib figure.
    """
    groups, series = list(table.index), list(table.columns)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * max(1, len(series)) / 2), 4.5))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, name in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, table[name].to_numpy(float), width=width, label=str(name))
    if hline is not None:
        ax.axhline(hline, ls="--", c="grey", lw=1)
    ax.set_xticks(x)
    ax.set_xticklabels([str(g) for g in groups], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
