"""Is the dataset biased? Class and source distributions of descriptors that should not matter.

For every descriptor the audit compares
  * the two classes (all rows),
  * each source against the rest, and
  * the two classes within each source,
with two-sample tests and effect sizes (:mod:`cosynth.audit.stats`), and it measures a
*shortcut score*: the cross-validated ROC AUC of a trivial classifier that sees only that
descriptor (and one that sees all descriptors together, still no structure).

Verdict thresholds (documented in README "Trust"):
  * ``bias``: shortcut AUC ≥ 0.80 — a single property nobody would call "synthesizability"
    separates the classes as well as a decent model; any model trained on this table can reach
    that score without learning anything else.
  * ``warn``: shortcut AUC ≥ 0.65, or a medium effect (|SMD| ≥ 0.5) that is significant
    (KS p < 0.01).
  * ``ok`` otherwise.
A source confound is reported separately: the label base rate per source (χ² test, Cramér's V)
and the shortcut AUC of the source alone.

When formulas repeat (polymorph datasets), the audit adds ``<descriptor>_vs_formula``: the value
divided by the median of the same formula in the table. It removes what composition explains
and exposes a bias hidden inside each formula, such as generated polymorphs that are always
denser than the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cosynth.audit.stats import compare_categorical, compare_numeric, shortcut_auc
from cosynth.represent.descriptors import CATEGORICAL, CRYSTAL_SYSTEMS, DESCRIPTORS

BIAS_AUC = 0.80
WARN_AUC = 0.65
WARN_SMD = 0.5
SIGNIFICANT_P = 0.01
MAX_SOURCES = 12  # per-source panels and tests beyond this many sources are not informative
RELATIVE_TO_FORMULA = ("density", "volume_per_atom", "packing_fraction", "min_distance")
DEFAULT_STRUCTURE = ["density", "mean_atomic_mass", "volume_per_atom", "packing_fraction", "n_elements",
                     "n_sites", "min_distance", "spacegroup_number", "crystal_system"]
DEFAULT_COMPOSITION = ["mean_atomic_mass", "n_elements", "mean_electronegativity", "electronegativity_range",
                       "mean_covalent_radius", "max_atomic_number"]


@dataclass
class AuditSettings:
    label: str
    source: str | None = None
    group: str | None = None  # column whose values folds never split (e.g. formula)
    folds: int = 5
    seed: int = 0
    positive: object = 1

    def thresholds(self) -> dict:
        return {"bias_auc": BIAS_AUC, "warn_auc": WARN_AUC, "warn_smd": WARN_SMD, "significant_p": SIGNIFICANT_P}


def add_formula_relative(frame: pd.DataFrame, formula_column: str = "formula",
                         names=RELATIVE_TO_FORMULA) -> list[str]:
    """Add ``<name>_vs_formula`` columns (value / median of its formula) to ``frame`` in place.

    Only when at least a fifth of the rows share their formula with another row: otherwise the
    ratio is 1 almost everywhere and says nothing. Rows whose formula is unique get NaN.

    Args:
        frame: the table; modified in place.
        formula_column: the column holding the formula.
        names: descriptor columns to divide; missing or all-NaN columns are skipped.

    Returns:
        The names of the added columns (empty when none were added).
    """
    if formula_column not in frame.columns:
        return []
    sizes = frame.groupby(formula_column)[formula_column].transform("size")
    if (sizes > 1).mean() < 0.2:
        return []
    added = []
    for name in names:
        if name in frame.columns and frame[name].notna().any():
            median = frame.groupby(formula_column)[name].transform("median")
            frame[f"{name}_vs_formula"] = np.where(sizes > 1, frame[name] / median, np.nan)
            added.append(f"{name}_vs_formula")
    return added


def _codes(values: pd.Series) -> np.ndarray:
    """Categorical descriptor → ordinal codes (crystal systems in order of rising symmetry)."""
    order = {c: i for i, c in enumerate(CRYSTAL_SYSTEMS)}
    cats = sorted({v for v in values if isinstance(v, str)} - set(order))
    order.update({c: len(order) + i for i, c in enumerate(cats)})
    return np.array([order.get(v, np.nan) if isinstance(v, str) else np.nan for v in values], dtype=float)


def _is_categorical(frame: pd.DataFrame, name: str) -> bool:
    return name in CATEGORICAL or not pd.api.types.is_numeric_dtype(frame[name])


def _compare(frame: pd.DataFrame, name: str, mask_a: np.ndarray, mask_b: np.ndarray) -> dict:
    col = frame[name]
    if _is_categorical(frame, name):
        return compare_categorical(col[mask_a].tolist(), col[mask_b].tolist())
    return compare_numeric(col[mask_a].to_numpy(float), col[mask_b].to_numpy(float))


def _verdict(classes: dict, shortcut: dict) -> tuple[str, list[str]]:
    auc = shortcut.get("auc", float("nan"))
    reasons = []
    if auc == auc and auc >= BIAS_AUC:
        reasons.append(f"shortcut AUC {auc:.3f} ≥ {BIAS_AUC}")
        return "bias", reasons
    if auc == auc and auc >= WARN_AUC:
        reasons.append(f"shortcut AUC {auc:.3f} ≥ {WARN_AUC}")
    smd, p = classes.get("smd", float("nan")), classes.get("ks_pvalue", float("nan"))
    if smd == smd and abs(smd) >= WARN_SMD and p == p and p < SIGNIFICANT_P:
        reasons.append(f"|SMD| {abs(smd):.2f} ≥ {WARN_SMD} with KS p = {p:.2g}")
    cv, chi_p = classes.get("cramers_v", float("nan")), classes.get("chi2_pvalue", float("nan"))
    if cv == cv and cv >= 0.3 and chi_p < SIGNIFICANT_P:
        reasons.append(f"Cramér's V {cv:.2f} ≥ 0.3 with χ² p = {chi_p:.2g}")
    return ("warn" if reasons else "ok"), reasons


def _check_binary_label(values: pd.Series, label: str, positive: object) -> object:
    """The audit compares two classes: the label must hold exactly two values, one of them ``positive``.

    Returns the label's value that is ``positive`` (the string '1' of a text column matches 1)."""
    found = list(pd.unique(values))
    shown = ", ".join(repr(_plain(v)) for v in sorted(found, key=str)[:10]) + (", ..." if len(found) > 10 else "")
    if len(found) > 2:
        raise ValueError(f"label column {label!r} must be binary (two classes); it holds {len(found)} "
                         f"values: {shown}")
    if len(found) < 2:
        raise ValueError(f"label column {label!r} has a single class ({shown or 'no labelled rows'}); "
                         "the audit compares two")
    if any(v == positive for v in found):
        return positive
    same_text = [v for v in found if str(_plain(v)).strip() == str(positive)]
    if same_text:
        return same_text[0]
    raise ValueError(f"label column {label!r} holds {shown} but not the positive value {positive!r}; "
                     "choose which of the two values is positive")


def _plain(value: object) -> object:
    """numpy scalars as Python values, so messages read 1 and 'a', not np.int64(1)."""
    return value.item() if hasattr(value, "item") else value


def audit(frame: pd.DataFrame, settings: AuditSettings, descriptors: list[str]) -> dict:
    """All numbers of the audit of ``frame`` (descriptors are columns of it), JSON-ready.

    Rows without a label are dropped (and counted). With a source column, sources beyond the
    :data:`MAX_SOURCES` largest get no per-source comparisons.

    Args:
        frame: the table with the label, descriptor and (optional) source and group columns.
        settings: label, source and group columns, folds, seed and the positive label value.
        descriptors: the columns to audit.

    Returns:
        A dict with ``rows``, ``settings``, ``descriptors`` (per descriptor: class comparison, shortcut
        AUC, verdict), ``all_descriptors_shortcut``, ``verdict`` and, with a source column,
        ``sources`` and ``source_confound``.

    Raises:
        ValueError: a missing label, source or descriptor column, or a label that is not binary or lacks
            the positive value.
    """
    if settings.label not in frame.columns:
        raise ValueError(f"no label column {settings.label!r}; columns: {', '.join(map(str, frame.columns))}")
    missing = [d for d in descriptors if d not in frame.columns]
    if missing:
        raise ValueError(f"descriptors not in the table: {', '.join(missing)}")
    labelled = frame[frame[settings.label].notna()].reset_index(drop=True)
    dropped = len(frame) - len(labelled)
    positive = _check_binary_label(labelled[settings.label], settings.label, settings.positive)
    y = (labelled[settings.label] == positive).to_numpy()
    groups = labelled[settings.group].astype(str).to_numpy() if settings.group else None
    sources = None
    if settings.source:
        if settings.source not in labelled.columns:
            raise ValueError(f"no source column {settings.source!r}")
        sources = labelled[settings.source].astype(str).fillna("<missing>").to_numpy()

    result: dict = {
        "rows": {"total": int(len(frame)), "labelled": int(len(labelled)), "unlabelled_dropped": int(dropped),
                 "positive": int(y.sum()), "negative": int((~y).sum())},
        "settings": {"label": settings.label, "positive_value": settings.positive, "source": settings.source,
                     "group": settings.group, "folds": settings.folds, "seed": settings.seed,
                     "thresholds": settings.thresholds(),
                     "shortcut_classifier": "one descriptor: spline-logistic on quantiles; several: "
                                            "HistGradientBoosting(max_depth=3); out-of-fold AUC"},
        "descriptors": {},
    }
    source_names: list[str] = []
    if sources is not None:
        counts = pd.Series(sources).value_counts()
        source_names = counts.index[:MAX_SOURCES].tolist()
        result["sources"] = {
            s: {"rows": int(counts[s]), "positive": int(y[sources == s].sum()),
                "positive_rate": float(y[sources == s].mean())} for s in counts.index}
        result["source_confound"] = _source_confound(sources, y, groups, settings)

    numeric_matrix = []
    for name in descriptors:
        categorical = _is_categorical(labelled, name)
        values = _codes(labelled[name]) if categorical else labelled[name].to_numpy(float)
        numeric_matrix.append(values)
        entry: dict = {"description": DESCRIPTORS.get(name, _describe_extra(name)),
                       "kind": "categorical" if categorical else "numeric",
                       "coverage": float(np.mean(np.isfinite(values)))}
        if not np.isfinite(values).any():
            entry.update(verdict="skipped", reasons=["no values (composition-only rows?)"])
            result["descriptors"][name] = entry
            continue
        entry["classes"] = _compare(labelled, name, y, ~y)
        entry["shortcut"] = shortcut_auc(values, y, groups=groups, folds=settings.folds, seed=settings.seed)
        if sources is not None:
            entry["source_vs_rest"] = {s: _compare(labelled, name, sources == s, sources != s) for s in source_names}
            entry["classes_within_source"] = {}
            for s in source_names:
                m = sources == s
                if min((y & m).sum(), (~y & m).sum()) >= 5:
                    within = _compare(labelled, name, y & m, ~y & m)
                    within["shortcut"] = shortcut_auc(values[m], y[m], groups=None if groups is None else groups[m],
                                                      folds=settings.folds, seed=settings.seed)
                    entry["classes_within_source"][s] = within
        entry["verdict"], entry["reasons"] = _verdict(entry["classes"], entry["shortcut"])
        result["descriptors"][name] = entry

    X = np.column_stack(numeric_matrix) if numeric_matrix else np.zeros((len(y), 0))
    result["all_descriptors_shortcut"] = (shortcut_auc(X, y, groups=groups, folds=settings.folds, seed=settings.seed)
                                         if X.shape[1] else {"auc": float("nan"), "note": "no descriptors"})
    result["all_descriptors_shortcut"]["descriptors"] = list(descriptors)
    flagged = [n for n, e in result["descriptors"].items() if e.get("verdict") == "bias"]
    warned = [n for n, e in result["descriptors"].items() if e.get("verdict") == "warn"]
    all_auc = result["all_descriptors_shortcut"].get("auc", float("nan"))
    result["verdict"] = {
        "biased": bool(flagged) or bool(all_auc == all_auc and all_auc >= BIAS_AUC),
        "flagged": flagged, "warned": warned,
        "all_descriptors_auc": all_auc,
        "source_confound": bool(result.get("source_confound", {}).get("flag", False)),
    }
    return result


def _describe_extra(name: str) -> str:
    if name.endswith("_vs_formula"):
        base = name[: -len("_vs_formula")]
        return f"{base} / median {base} of the same formula in this table"
    return "table column"


def _source_confound(sources: np.ndarray, y: np.ndarray, groups, settings: AuditSettings) -> dict:
    """Does the label depend on where a row came from? (Then a model can learn the source.)"""
    from scipy.stats import chi2_contingency

    names = sorted(set(sources))
    table = np.array([[np.sum((sources == s) & y), np.sum((sources == s) & ~y)] for s in names], dtype=float)
    out: dict = {"sources": len(names)}
    if len(names) < 2:
        out.update(flag=False, note="a single source")
        return out
    chi2, p, _, _ = chi2_contingency(table)
    v = float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))
    codes = np.array([names.index(s) for s in sources], dtype=float)
    # one-hot so the trees need no order between sources
    onehot = (codes[:, None] == np.arange(len(names))[None, :]).astype(float)
    auc = shortcut_auc(onehot, y, groups=groups, folds=settings.folds, seed=settings.seed)
    rates = table[:, 0] / table.sum(axis=1)
    out.update(chi2=float(chi2), chi2_pvalue=float(p), cramers_v=v, shortcut=auc,
               positive_rate_min=float(rates.min()), positive_rate_max=float(rates.max()),
               flag=bool((v >= 0.3 and p < SIGNIFICANT_P) or (auc.get("auc", 0) or 0) >= WARN_AUC))
    return out


def describe_table(table, *, cache_dir=None, progress: bool = False) -> pd.DataFrame:
    """Descriptors of every row of a CrystalTable, aligned with ``table.frame``.

    Args:
        table: a CrystalTable (its ``formula`` column and structures are used).
        cache_dir: descriptor cache folder, or None for no cache.
        progress: show a progress bar.

    Returns:
        A DataFrame of descriptors, one row per table row.
    """
    from cosynth.represent.descriptors import compute_descriptors

    frame = table.frame
    return compute_descriptors(frame["formula"].tolist(), table.structures(), cache_dir=cache_dir, progress=progress)


def default_descriptors(has_structures: bool) -> list[str]:
    return list(DEFAULT_STRUCTURE if has_structures else DEFAULT_COMPOSITION)


def audit_table(table, label: str, *, source: str | None = None, descriptors: list[str] | None = None,
                group: str | None = None, folds: int = 5, seed: int = 0, positive=1,
                out_dir=None, cache_dir=None, title: str | None = None, progress: bool = False) -> dict:
    """Is the data biased? Descriptor distributions per class (and source), two-sample tests and
    shortcut AUCs.

    Args:
        table: a CrystalTable, a DataFrame (id/formula/cif columns as in a CrystalTable) or a path.
        label: the class column.
        source, group: a source column to compare within; a group column for grouped folds.
        descriptors: computed descriptor names (:data:`DESCRIPTORS`) or numeric table columns.
        folds, seed, positive: shortcut-AUC cross-validation settings; the positive class value.
        out_dir: write ``audit.json``, figures and ``audit.html`` here.
        cache_dir, title: descriptor cache folder; the report's title.
        progress: a progress bar (with a total and an ETA) while descriptors are computed.

    Returns:
        The audit as a dict (also ``audit.json``).
    """
    import pandas as pd

    from cosynth.data.table import CrystalTable, read_table

    if isinstance(table, pd.DataFrame):
        table = CrystalTable.from_frame(table)
    elif not isinstance(table, CrystalTable):
        table = read_table(table)
    frame = table.frame.copy()
    has_structures = bool(table.has_structure().any())
    wanted = list(descriptors) if descriptors else default_descriptors(has_structures)
    relative = [d[: -len("_vs_formula")] for d in wanted if d.endswith("_vs_formula")]
    # Known descriptor names are always computed from the structures (a table column of the same
    # name may be partial or mean something else); other names must be numeric table columns.
    computed = sorted(d for d in {*wanted, *relative} if d in DESCRIPTORS)
    if computed:
        desc = describe_table(table, cache_dir=cache_dir, progress=progress)
        for name in computed:
            frame[name] = desc[name].to_numpy()
    if relative:
        add_formula_relative(frame, names=relative)
    unknown = [d for d in wanted if d not in frame.columns]
    if unknown:
        raise ValueError(f"unknown descriptor(s) {', '.join(unknown)}; computed ones: {', '.join(DESCRIPTORS)}; "
                         f"or give numeric columns of the table")
    if not descriptors:
        wanted += add_formula_relative(frame)
    settings = AuditSettings(label=label, source=source, group=group, folds=folds, seed=seed, positive=positive)
    result = audit(frame, settings, wanted)
    result["table"] = {"path": str(getattr(table, "path", "") or ""), "rows_with_structure": int(table.has_structure().sum()),
                       "load_errors": int(len(table.errors))}
    if out_dir is not None:
        write_audit(result, frame, settings, wanted, out_dir, title=title)
    return result


def verdict_table(result: dict) -> pd.DataFrame:
    """One row per descriptor: the numbers behind its verdict."""
    rows = []
    for name, e in result["descriptors"].items():
        c = e.get("classes", {})
        rows.append({"descriptor": name, "verdict": e.get("verdict"),
                     "shortcut AUC": e.get("shortcut", {}).get("auc", float("nan")),
                     "rank AUC": c.get("rank_auc", float("nan")), "SMD": c.get("smd", float("nan")),
                     "KS": c.get("ks_statistic", float("nan")), "KS p": c.get("ks_pvalue", float("nan")),
                     "AD p": c.get("ad_pvalue", c.get("chi2_pvalue", float("nan"))),
                     "Wasserstein": c.get("wasserstein", c.get("total_variation", float("nan"))),
                     "mean pos": c.get("mean_a", float("nan")), "mean neg": c.get("mean_b", float("nan")),
                     "reasons": "; ".join(e.get("reasons", []))})
    return pd.DataFrame(rows)


def write_audit(result: dict, frame: pd.DataFrame, settings: AuditSettings, descriptors: list[str], out_dir,
                title: str | None = None) -> None:
    """Write ``audit.json``, per-descriptor figures and ``audit.html`` for an audit result.

    Args:
        result: the dict from :func:`audit`.
        frame: the table the audit ran on (with the descriptor columns).
        settings: the audit's settings (label, source, positive value).
        descriptors: the descriptors to plot; categorical and skipped ones get no figure.
        out_dir: output folder, created if missing; figures go to ``out_dir/figures``.
        title: the report's title (default "Data audit").
    """
    from cosynth.io.files import atomic_write_json
    from cosynth.report import figures
    from cosynth.report.html import HtmlReport

    out = _out_dir(out_dir)
    atomic_write_json(out / "audit.json", result)
    labelled = frame[frame[settings.label].notna()]
    y = (labelled[settings.label] == settings.positive).astype(int).to_numpy()
    sources = labelled[settings.source].astype(str).to_numpy() if settings.source else None
    page = HtmlReport(title or "Data audit")
    v = result["verdict"]
    page.paragraph(f"{result['rows']['labelled']} labelled rows ({result['rows']['positive']} positive, "
                   f"{result['rows']['negative']} negative); label column '{settings.label}'"
                   + (f", source column '{settings.source}'" if settings.source else "") + ".")
    summary = ("BIASED: " + ", ".join(v["flagged"]) + " separate(s) the classes on its own."
               if v["flagged"] else "No descriptor separates the classes on its own (no shortcut ≥ "
               f"{BIAS_AUC}).")
    page.paragraph(summary + f" All descriptors together (no structure): shortcut AUC "
                   f"{v['all_descriptors_auc']:.3f}.")
    page.heading("Verdict per descriptor")
    vt = verdict_table(result)
    page.table(vt, row_class=[f"flag-{x}" for x in vt["verdict"]])
    page.paragraph(f"Thresholds: bias if the cross-validated shortcut AUC ≥ {BIAS_AUC}; warn if ≥ {WARN_AUC} or "
                   f"|SMD| ≥ {WARN_SMD} with KS p < {SIGNIFICANT_P}. Shortcut = out-of-fold ROC AUC of a smooth "
                   "spline-logistic classifier that sees only that descriptor.", css="note")
    if "source_confound" in result:
        sc = result["source_confound"]
        page.heading("Source confound")
        page.table(pd.DataFrame([{"source": s, **d} for s, d in result["sources"].items()]))
        if "chi2" in sc:
            page.paragraph(f"Label × source: χ² p = {sc['chi2_pvalue']:.3g}, Cramér's V = {sc['cramers_v']:.3f}; "
                           f"a classifier that sees only the source reaches AUC {sc['shortcut'].get('auc', float('nan')):.3f}."
                           + (" The label depends on the source: stratify or control for it." if sc["flag"] else ""))
    page.heading("Class-conditional distributions (paper Fig. 2)")
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    for name in descriptors:
        e = result["descriptors"][name]
        if e.get("verdict") == "skipped" or e.get("kind") == "categorical":
            continue
        fig = figures.class_panels(labelled[name].to_numpy(float), y, sources, name,
                                   f"{name}: {e['description']} — verdict {e['verdict']}")
        png = figdir / f"audit_{name}.png"
        fig.savefig(png, dpi=110, bbox_inches="tight")
        page.figure(fig, f"{name} by class" + (" and source" if sources is not None else ""))
    page.json_block(result)
    page.write(out / "audit.html")


def _out_dir(out_dir):
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out
