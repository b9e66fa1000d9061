"""How many rotations does a stable prediction need? (The bias paper's Table I, made explicit.)

Procedure: for each ensemble size E, predict every crystal R times, each time as the mean of E
rotations, and label it at the threshold. A crystal is *consistent* at E when all R labels
agree. Reported per E: the number of inconsistent crystals, the consistent percentage, and the
mean over inconsistent crystals of the standard deviation of their R ensemble means.

Two ways to get the R ensembles:
  * ``fresh``: every ensemble draws its own E rotations (E·R images per crystal and size; exact,
    the paper's procedure, and the only one that fits a low-discrepancy sampler, whose point is
    how a *whole set* covers SO(3));
  * ``pool``: each crystal's probabilities for a pool of M independent rotations are computed
    once and every ensemble resamples E of them with replacement (a bootstrap: M images per
    crystal in total). Each ensemble mean then has the right variance σ²/E, but all share the
    pool's own error σ/√M, so for E close to M the inconsistency is somewhat understated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cosynth.models.voxel_cnn.ensemble import image_probabilities
from cosynth.represent.voxel import CrystalImager, crystal_rng, sample_rotations

PAPER_SIZES = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200)


def consistency(means: np.ndarray, threshold: float = 0.5) -> dict:
    """means: (n_crystals, R) ensemble-mean likelihoods of R repeats → Table I numbers."""
    labels = means >= threshold
    consistent = labels.all(axis=1) | (~labels).all(axis=1)
    spread = means.std(axis=1)
    n = len(means)
    return {"crystals": int(n), "repeats": int(means.shape[1]), "inconsistent": int((~consistent).sum()),
            "consistent_pct": float(100.0 * consistent.mean()) if n else float("nan"),
            "mean_std_inconsistent": float(spread[~consistent].mean()) if (~consistent).any() else 0.0,
            "mean_std_all": float(spread.mean()) if n else float("nan")}


def pool_means(pool: np.ndarray, size: int, repeats: int, seed: int) -> np.ndarray:
    """(n, M) per-rotation probabilities → (n, repeats) bootstrap means of ``size`` draws.

    Args:
        pool: per-crystal probabilities of M rotations, shape (n, M).
        size: draws per ensemble (with replacement).
        repeats: ensembles per crystal.
        seed: seeds the draws, together with ``size``.

    Returns:
        An (n, repeats) array of ensemble means.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, 0x5EED]))
    idx = rng.integers(0, pool.shape[1], size=(pool.shape[0], repeats, size))
    return np.take_along_axis(pool[:, None, :], idx, axis=2).mean(axis=2)


def _crystal_probabilities(model, imager: CrystalImager, angles: np.ndarray) -> np.ndarray:
    return image_probabilities(model, [imager.image(a, "haar") for a in angles])


def ensemble_study(model, structures, ids, *, sizes=PAPER_SIZES, repeats: int = 10, seed: int = 0,
                   threshold: float = 0.5, mode: str = "pool", pool_size: int = 200,
                   samplers=("haar",), progress: bool = False) -> dict:
    """Table I for each sampler (see the module doc).

    Args:
        model: the loaded voxel model.
        structures, ids: aligned lists of structures and crystal ids (ids key the rotations).
        sizes: the ensemble sizes E.
        repeats: ensembles R per crystal and size, at least 2.
        seed: seed of the rotations and of the bootstrap.
        threshold: likelihood at which a crystal is labelled positive.
        mode: ``pool`` (bootstrap from ``pool_size`` rotations) or ``fresh``.
        pool_size: rotations per crystal in the pool mode.
        samplers: rotation samplers; the pool mode takes only ``("haar",)``.
        progress: a progress bar over crystals.

    Returns:
        A JSON-ready dict with a row per (sampler, E) (:func:`consistency`) and, for the pool mode, the pool
        size and each crystal's mean pool likelihood.

    Raises:
        ValueError: an unknown mode, ``repeats`` < 2, or a sampler other than haar in the pool mode.
    """
    if mode not in ("pool", "fresh"):
        raise ValueError(f"mode must be pool or fresh, not {mode!r}")
    if repeats < 2:
        raise ValueError("repeats must be at least 2: consistency compares repeated ensembles")
    if mode == "pool" and tuple(samplers) != ("haar",):
        raise ValueError("the pool mode resamples independent rotations; use --mode fresh for other samplers")
    imagers = [CrystalImager.from_structure(s) for s in structures]
    iterator = range(len(imagers))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="ensemble study", unit="crystal")
    rows = []
    if mode == "pool":
        pool = np.zeros((len(imagers), pool_size))
        for i in iterator:
            angles = sample_rotations("haar", pool_size, crystal_rng(seed, ids[i], 0x9001))
            pool[i] = _crystal_probabilities(model, imagers[i], angles)
        for size in sizes:
            rows.append({"sampler": "haar", "E": int(size), **consistency(pool_means(pool, size, repeats, seed),
                                                                            threshold)})
        extra = {"pool_size": pool_size, "pool_mean_likelihood": pool.mean(axis=1).tolist()}
    else:
        means = {(s, e): np.zeros((len(imagers), repeats)) for s in samplers for e in sizes}
        for i in iterator:
            for sampler in samplers:
                for size in sizes:
                    for r in range(repeats):
                        rng = crystal_rng(seed, ids[i], 0x9002, int(size), r)
                        angles = sample_rotations(sampler, int(size), rng)
                        means[sampler, size][i, r] = _crystal_probabilities(model, imagers[i], angles).mean()
        for sampler in samplers:
            for size in sizes:
                rows.append({"sampler": sampler, "E": int(size), **consistency(means[sampler, size], threshold)})
        extra = {}
    return {"mode": mode, "repeats": repeats, "seed": seed, "threshold": threshold, "crystals": len(imagers),
            "rows": rows, **extra}


def smallest_sufficient_size(rows: list[dict], sampler: str, target_pct: float) -> int | None:
    """Smallest E whose consistent % reaches ``target_pct`` for ``sampler``.

    Args:
        rows: the ``rows`` of :func:`ensemble_study`.
        sampler: the sampler to look at.
        target_pct: the consistent percentage to reach.

    Returns:
        That E, or None if none does.
    """
    ok = [r["E"] for r in rows if r["sampler"] == sampler and r["consistent_pct"] >= target_pct]
    return min(ok) if ok else None


def study_table(result: dict) -> pd.DataFrame:
    df = pd.DataFrame(result["rows"])
    return df[["sampler", "E", "inconsistent", "consistent_pct", "mean_std_inconsistent", "crystals", "repeats"]]


def write_study(result: dict, out_dir) -> None:
    from pathlib import Path

    from cosynth.io.files import atomic_write_json
    from cosynth.report import figures
    from cosynth.report.html import HtmlReport

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ensemble_study.json", result)
    df = study_table(result)
    page = HtmlReport("Ensemble-size study")
    how = (f"bootstrap: E of {result.get('pool_size')} pooled rotations per crystal" if result["mode"] == "pool"
           else "fresh rotations for every ensemble")
    page.paragraph(f"{result['crystals']} crystals; each ensemble size E repeated R = {result['repeats']} times ({how}); "
                   f"a crystal is consistent when all R ensemble-mean labels at {result['threshold']} agree. "
                   "'mean std' is the standard deviation of the R ensemble means, averaged over inconsistent crystals.")
    page.table(df)
    for metric, label in (("consistent_pct", "consistent %"), ("mean_std_inconsistent", "mean std (inconsistent)")):
        series = {s: g.sort_values("E")[metric].to_numpy(float) for s, g in df.groupby("sampler")}
        x = sorted(df["E"].unique())
        fig = figures.curves(x, series, "ensemble size E", label, f"{label} vs E")
        fig.axes[0].set_xscale("log")
        fig.savefig(out / "figures" / f"ensemble_{metric}.png", dpi=110, bbox_inches="tight")
        page.figure(fig, f"{label} per ensemble size and sampler")
    samplers = sorted(df["sampler"].unique())
    if len(samplers) > 1:
        base = df[df["sampler"] == "haar"]
        rows = []
        for _, r in base.iterrows():
            rows.append({"haar E": r["E"], "haar consistent %": r["consistent_pct"],
                         **{f"smallest {s} E reaching it": smallest_sufficient_size(result["rows"], s, r["consistent_pct"])
                            for s in samplers if s != "haar"}})
        result["equivalent_sizes"] = rows
        page.heading("How small can E be with a low-discrepancy set?")
        page.table(pd.DataFrame(rows))
        atomic_write_json(out / "ensemble_study.json", result)
    page.json_block(result)
    page.write(out / "ensemble_study.html")
