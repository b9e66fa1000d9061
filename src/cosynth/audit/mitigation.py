"""Fixing a biased dataset: make a descriptor's class-conditional distributions equal.

Three remedies (the bias paper names the problem and leaves these open):
  * ``importance_weights`` — per-row training weights w = p_pooled(bin) / p_class(bin), so that
    each class, weighted, has the pooled distribution of the descriptor (a training option:
    ``cosynth train voxel --weight-column``);
  * ``matched_sample`` — keep, in every quantile bin of the descriptor, the same share of each
    class (random within the bin, seeded), so the kept classes share one distribution;
  * ``normalize_volumes`` — rescale generated structures to a realistic volume (that of a known
    structure of the same formula, drawn at random, else a per-element volume fit on the known
    structures), removing the low-fidelity volume that created the density bias in the first
    place. Drawing, rather than taking the median, keeps the known spread: structures all
    pinned to the median would be a new give-away.
Re-run the audit on the result to see the effect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index per finite value on pooled quantile edges (-1 for NaN)."""
    finite = np.isfinite(values)
    out = np.full(len(values), -1)
    if not finite.any():
        return out
    edges = np.unique(np.quantile(values[finite], np.linspace(0, 1, bins + 1)))
    out[finite] = np.clip(np.searchsorted(edges, values[finite], side="right") - 1, 0, max(len(edges) - 2, 0))
    return out


def importance_weights(values, labels, bins: int = 20) -> np.ndarray:
    """Weights that give both classes the pooled distribution of ``values``.

    Per row w = p_pooled(bin) / p_class(bin) on pooled quantile bins. Weights are then normalised to
    mean 1 within each class (class balance is unchanged); rows without a value start at weight 1
    and are scaled by that normalisation too.

    Args:
        values: the descriptor per row (NaN where unknown).
        labels: class per row, 0 or 1.
        bins: the number of quantile bins.

    Returns:
        One weight per row.
    """
    values, labels = np.asarray(values, float), np.asarray(labels).astype(int)
    b = _bins(values, bins)
    w = np.ones(len(values))
    ok = b >= 0
    pooled = np.bincount(b[ok], minlength=bins) / ok.sum()
    for cls in (0, 1):
        m = ok & (labels == cls)
        if not m.any():
            continue
        own = np.bincount(b[m], minlength=bins) / m.sum()
        w[m] = pooled[b[m]] / own[b[m]]
        w[labels == cls] /= w[labels == cls].mean()
    return w


def matched_sample(values, labels, bins: int = 20, seed: int = 0) -> np.ndarray:
    """Sorted indices of a subsample whose classes share the distribution of ``values``.

    The overall class ratio ρ = n₁/n₀ is kept: in each bin, min(n₁, ρ·n₀) positives and
    min(n₀, n₁/ρ) negatives survive (rounded down, drawn at random). Rows without a value are dropped.

    Args:
        values: the descriptor per row (NaN where unknown).
        labels: class per row, 0 or 1.
        bins: the number of quantile bins.
        seed: seed of the random draw within each bin.

    Returns:
        The kept row indices, sorted.

    Raises:
        ValueError: a class has no row with a value.
    """
    values, labels = np.asarray(values, float), np.asarray(labels).astype(int)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBA1A]))
    b = _bins(values, bins)
    ok = b >= 0
    n1, n0 = int((ok & (labels == 1)).sum()), int((ok & (labels == 0)).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("matching needs both classes with a value of the descriptor")
    ratio = n1 / n0
    keep = []
    for k in np.unique(b[ok]):
        pos = np.flatnonzero((b == k) & (labels == 1))
        neg = np.flatnonzero((b == k) & (labels == 0))
        n_neg = int(np.floor(min(len(neg), len(pos) / ratio)))
        n_pos = int(np.floor(min(len(pos), n_neg * ratio)))
        keep += rng.choice(pos, n_pos, replace=False).tolist() + rng.choice(neg, n_neg, replace=False).tolist()
    return np.sort(np.asarray(keep, dtype=int))


def element_volumes(structures, formulas=None) -> dict[str, float]:
    """Per-element volume per atom (Å³) fitted to the cell volumes of known structures by
    non-negative least squares: V_cell ≈ Σ_element n_element · v_element."""
    from scipy.optimize import nnls

    rows, volumes, elements = [], [], {}
    for s in structures:
        if s is None:
            continue
        counts = s.composition.element_composition.get_el_amt_dict()
        for el in counts:
            elements.setdefault(el, len(elements))
        rows.append(counts)
        volumes.append(s.volume)
    if not rows:
        raise ValueError("no reference structures to fit element volumes")
    A = np.zeros((len(rows), len(elements)))
    for i, counts in enumerate(rows):
        for el, n in counts.items():
            A[i, elements[el]] = n
    v, _ = nnls(A, np.asarray(volumes))
    return {el: float(v[j]) for el, j in elements.items()}


def normalize_volumes(structures, formulas, to_fix, reference, *, fallback: str = "elements",
                      seed: int = 0) -> tuple[list, pd.DataFrame]:
    """Rescale ``structures[i]`` for every i in ``to_fix`` to a realistic volume.

    Target volume per atom: that of a ``reference`` row (known structure) of the same formula,
    drawn at random (seeded); otherwise, with ``fallback="elements"``, the composition-weighted
    per-element fit (:func:`element_volumes`) on all reference rows, if it covers every element;
    otherwise the structure is left as is.

    Args:
        structures: pymatgen structures (None for rows without one; those are skipped).
        formulas: formula per row.
        to_fix, reference: boolean masks of the rows to rescale and of the known rows to take volumes from.
        fallback: ``"elements"`` for the per-element fit; any other value disables it.
        seed: seed of the draw among a formula's known volumes.

    Returns:
        The new list of structures (rescaled ones are copies) and one log row per fixed structure
        (``row``, old/new volume per atom, ``factor``, ``target``: how the target was found or "none found").

    Raises:
        ValueError: ``fallback="elements"`` and no reference structure.
    """
    structures = list(structures)
    formulas = [str(f) for f in formulas]
    to_fix, reference = np.asarray(to_fix, bool), np.asarray(reference, bool)
    ref_vpa: dict[str, list[float]] = {}
    for s, f, r in zip(structures, formulas, reference):
        if r and s is not None:
            ref_vpa.setdefault(f, []).append(s.volume / len(s))
    per_element = None
    if fallback == "elements":
        per_element = element_volumes([s for s, r in zip(structures, reference) if r])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x701]))
    log = []
    for i in np.flatnonzero(to_fix):
        s = structures[i]
        if s is None:
            continue
        old = s.volume / len(s)
        if formulas[i] in ref_vpa:
            target, how = float(rng.choice(ref_vpa[formulas[i]])), "a known structure of the formula"
        elif per_element is not None and all(el in per_element for el in s.composition.element_composition.get_el_amt_dict()):
            amounts = s.composition.element_composition.get_el_amt_dict()
            target = sum(per_element[el] * n for el, n in amounts.items()) / sum(amounts.values())
            how = "per-element volume fit"
        else:
            log.append({"row": int(i), "vpa_old": old, "vpa_new": old, "factor": 1.0, "target": "none found"})
            continue
        fixed = s.copy()
        fixed.scale_lattice(target * len(s))
        structures[i] = fixed
        log.append({"row": int(i), "vpa_old": old, "vpa_new": target, "factor": target / old, "target": how})
    return structures, pd.DataFrame(log, columns=["row", "vpa_old", "vpa_new", "factor", "target"])


def mitigate_table(table, label: str, method: str, *, descriptor: str = "density", bins: int = 20, seed: int = 0,
                   fix_source: tuple[str, str] | None = None, cache_dir=None):
    """Apply one remedy to a CrystalTable.

    ``reweight`` adds a ``weight`` column (:func:`importance_weights`); ``match`` keeps a matched
    subsample (:func:`matched_sample`); ``normalize-volume`` rescales the structures of negatives (or of
    rows where column == value, with ``fix_source``) to the volume of known positives (:func:`normalize_volumes`)
    and adds a ``volume_normalisation_factor`` column. Unlabelled rows get weight 1 and are left out of matching.

    Args:
        table: the CrystalTable.
        label: the label column (1 = positive, 0 = negative).
        method: ``reweight``, ``match`` or ``normalize-volume``.
        descriptor: for reweight and match: a table column of that name, else a computed descriptor.
        bins, seed: quantile bins; seed of matching and of the volume draw.
        fix_source: (column, value) selecting the rows to rescale instead of the negatives.
        cache_dir: descriptor cache folder.

    Returns:
        (new table, summary dict).

    Raises:
        ValueError: no label column, no ``fix_source`` column, or an unknown method.
    """
    from cosynth.audit.audit import describe_table
    from cosynth.data.table import structure_to_cif

    frame = table.frame.copy()
    if label not in frame.columns:
        raise ValueError(f"no label column {label!r}")
    y = pd.to_numeric(frame[label], errors="coerce")
    summary: dict = {"method": method, "rows_before": int(len(frame)), "label": label, "seed": seed}
    if method in ("reweight", "match"):
        values = frame[descriptor].to_numpy(float) if descriptor in frame.columns else \
            describe_table(table, cache_dir=cache_dir)[descriptor].to_numpy(float)
        summary.update(descriptor=descriptor, bins=bins)
        labelled = y.notna().to_numpy()
        if method == "reweight":
            w = np.ones(len(frame))
            w[labelled] = importance_weights(values[labelled], y[labelled].astype(int), bins)
            frame["weight"] = w
            summary["effective_sample_size"] = float(w.sum() ** 2 / (w ** 2).sum())
            new = table.with_frame(frame)
        else:
            idx = np.flatnonzero(labelled)[matched_sample(values[labelled], y[labelled].astype(int), bins, seed)]
            new = table.subset(idx)
        summary["rows_after"] = int(len(new.frame))
        summary["positives_after"] = int((pd.to_numeric(new.frame[label], errors="coerce") == 1).sum())
        return new, summary
    if method == "normalize-volume":
        if fix_source:
            col, value = fix_source
            if col not in frame.columns:
                raise ValueError(f"no column {col!r}")
            to_fix = (frame[col].astype(str) == value).to_numpy()
        else:
            to_fix = (y == 0).to_numpy()
        reference = ((y == 1).to_numpy()) & ~to_fix
        structures, log = normalize_volumes(table.structures(), frame["formula"], to_fix, reference, seed=seed)
        frame["cif"] = [structure_to_cif(s) if s is not None else c for s, c in
                        zip(structures, frame["cif"] if "cif" in frame.columns else [None] * len(frame))]
        frame["volume_normalisation_factor"] = 1.0
        if len(log):
            frame.loc[frame.index[log["row"].to_numpy()], "volume_normalisation_factor"] = log["factor"].to_numpy()
        summary.update(rows_after=int(len(frame)), rescaled=int((log["target"] != "none found").sum()) if len(log) else 0,
                       median_factor=float(log["factor"].median()) if len(log) else None,
                       targets=log["target"].value_counts().to_dict() if len(log) else {})
        from cosynth.data.table import CrystalTable

        return CrystalTable.from_frame(frame), summary
    raise ValueError(f"unknown method {method!r}: reweight, match or normalize-volume")
