"""Dataset cards: what a built table holds and how it was made, next to the table.

A card is JSON (for programs: the audit, the report) and Markdown (for people) with the same
content: sources, counts per class × source × split, filters, seed, generator options, a
descriptor summary per class and any comparisons the builder measured (e.g. density of
generated negatives vs positives of the same formulas). Numbers come from the table itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.io.files import atomic_write_text

__all__ = ["card_paths", "descriptor_frame", "descriptor_summary", "paired_density_comparison", "write_card"]

SUMMARY_DESCRIPTORS = ("density", "mean_atomic_mass", "volume_per_atom", "packing_fraction", "n_sites",
                       "min_distance", "n_elements")


def card_paths(table_path) -> tuple[Path, Path]:
    """``<stem>.card.md`` and ``<stem>.card.json`` next to the table."""
    path = Path(table_path)
    name = path.name
    for ext in (".csv.gz", ".parquet", ".csv", ".jsonl"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return path.with_name(f"{name}.card.md"), path.with_name(f"{name}.card.json")


def descriptor_frame(table) -> pd.DataFrame:
    """Descriptors per row (cosynth.represent.descriptors), aligned with the table's rows."""
    from cosynth.represent.descriptors import compute_descriptors

    return compute_descriptors(table.frame["formula"].tolist(), table.structures()).set_index(table.frame.index)


def _stats(values: pd.Series) -> dict:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return {"n": 0}
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(v.median()),
            "q25": float(v.quantile(0.25)), "q75": float(v.quantile(0.75))}


def descriptor_summary(frame: pd.DataFrame, descriptors: pd.DataFrame, by: str = "label") -> dict:
    """{group: {descriptor: stats}} for each value of ``by`` (and "all").

    Args:
        frame: the table (holds the ``by`` column).
        descriptors: descriptors aligned with ``frame``; only :data:`SUMMARY_DESCRIPTORS` are summarised.
        by: the grouping column; when absent, only "all".

    Returns:
        Per group and descriptor: n, mean, median, q25, q75 (just n = 0 without values).
    """
    out = {}
    groups = [("all", np.ones(len(frame), dtype=bool))]
    if by in frame.columns:
        groups += [(str(g), (frame[by] == g).to_numpy()) for g in sorted(frame[by].dropna().unique())]
    for name, mask in groups:
        out[name] = {d: _stats(descriptors.loc[mask, d]) for d in SUMMARY_DESCRIPTORS if d in descriptors}
    return out


def paired_density_comparison(formulas, labels, density) -> dict:
    """Density of negatives vs positives of the same formulas.

    Per formula with both classes: ratio of median negative to median positive density. Summary:
    median and quartiles of the ratio, share of formulas above 1, Wilcoxon signed-rank test of
    the per-formula log ratios against 0 and Mann–Whitney U of pooled densities (two-sided).
    Rows without a density are ignored.

    Args:
        formulas, labels, density: per row: formula, label (1 positive, 0 negative), density.

    Returns:
        The summary as a dict; p-values are None when there is nothing to test (e.g. every ratio
        exactly 1). Just ``n_formulas`` 0 and a ``note`` when no formula has both classes.
    """
    from scipy.stats import mannwhitneyu, wilcoxon

    df = pd.DataFrame({"formula": list(formulas), "label": np.asarray(labels), "density": np.asarray(density, float)})
    df = df.dropna(subset=["density"])
    med = df.groupby(["formula", "label"])["density"].median().unstack()
    if not {0, 1} <= set(med.columns):
        return {"n_formulas": 0, "note": "no formula has both classes"}
    med = med.dropna(subset=[0, 1])
    if med.empty:
        return {"n_formulas": 0, "note": "no formula has both classes"}
    ratio = med[0] / med[1]
    both = df[df["formula"].isin(med.index)]
    neg, pos = both.loc[both["label"] == 0, "density"], both.loc[both["label"] == 1, "density"]
    # rounded: CIF text keeps 8 decimals, so "equal" densities differ by ~1e-8 relative
    log_ratio = np.round(np.log(ratio.to_numpy()), 6)
    # all ratios exactly 1 (e.g. reference scaling): no difference to test, p stays None
    wil = wilcoxon(log_ratio) if len(ratio) >= 2 and np.any(log_ratio != 0) else None
    mwu = mannwhitneyu(neg, pos, alternative="two-sided") if len(neg) and len(pos) else None
    return {
        "n_formulas": int(len(ratio)),
        "n_negatives": int(len(neg)),
        "n_positives": int(len(pos)),
        "median_density_negatives": float(neg.median()),
        "median_density_positives": float(pos.median()),
        "median_ratio": float(ratio.median()),
        "ratio_q25": float(ratio.quantile(0.25)),
        "ratio_q75": float(ratio.quantile(0.75)),
        "share_formulas_denser_negatives": float((log_ratio > 0).mean()),
        "wilcoxon_p": float(wil.pvalue) if wil is not None else None,
        "mannwhitney_p": float(mwu.pvalue) if mwu is not None else None,
    }


def counts(frame: pd.DataFrame) -> dict:
    """Rows per label, source, split and their crossings."""
    out: dict = {"rows": int(len(frame))}
    for col in ("label", "source", "split", "structure_source"):
        if col in frame.columns:
            out[col] = {str(k): int(v) for k, v in frame[col].value_counts(dropna=False).sort_index().items()}
    for a, b in (("source", "label"), ("split", "label"), ("structure_source", "label")):
        if a in frame.columns and b in frame.columns:
            tab = pd.crosstab(frame[a], frame[b])
            out[f"{a}_x_{b}"] = {str(i): {str(c): int(tab.loc[i, c]) for c in tab.columns} for i in tab.index}
    return out


def _clean(obj):
    """JSON-safe copy (NaN → None, numpy scalars → Python)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.3f}"
    return str(v)


def _md_table(rows: list[list], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return lines


def render_markdown(card: dict) -> str:
    """Human-readable card from its JSON content."""
    lines = [f"# Dataset card: {card.get('title', card.get('table'))}", ""]
    if card.get("summary"):
        lines += [card["summary"], ""]
    lines += [f"- table: `{card.get('table')}` ({card['counts']['rows']} rows)",
              f"- built by: `{card.get('command')}`", f"- seed: {card.get('seed')}"]
    if card.get("label_meaning"):
        lines.append(f"- label: {card['label_meaning']}")
    if card.get("source_meaning"):
        lines.append(f"- source column: {card['source_meaning']}")
    lines.append("")
    if card.get("sources"):
        lines += ["## Sources", *[f"- {s}" for s in card["sources"]], ""]
    if card.get("filters"):
        lines += ["## Filters", *[f"- {s}" for s in card["filters"]], ""]
    c = card["counts"]
    lines += ["## Counts", ""]
    for key, title in (("source_x_label", "source × label"), ("split_x_label", "split × label"),
                       ("structure_source_x_label", "structure_source × label")):
        if key in c:
            labels = sorted({lab for row in c[key].values() for lab in row})
            rows = [[k, *[row.get(lab, 0) for lab in labels], sum(row.values())] for k, row in c[key].items()]
            lines += [f"**{title}**", "", *_md_table(rows, [key.split("_x_")[0], *[f"label {lab}" for lab in labels], "total"]), ""]
    if card.get("confounds"):
        lines += ["## Confounds", ""]
        for k, v in card["confounds"].items():
            lines.append(f"- {k}: {_fmt(v) if not isinstance(v, dict) else json.dumps(v)}")
        lines.append("")
    if card.get("density_comparison"):
        lines += ["## Density: generated negatives vs positives of the same formulas", ""]
        dc = card["density_comparison"]
        if dc.get("note"):
            lines += [dc["note"], ""]
        rows = [[name, r.get("n_formulas"), r.get("median_density_negatives"), r.get("median_density_positives"),
                 r.get("median_ratio"), r.get("ratio_q25"), r.get("ratio_q75"), r.get("share_formulas_denser_negatives"),
                 r.get("wilcoxon_p"), r.get("mannwhitney_p")]
                for name, r in dc.items() if isinstance(r, dict)]
        lines += _md_table(rows, ["negatives scaled by", "formulas", "median ρ neg (g/cm³)", "median ρ pos",
                                  "median ratio neg/pos", "q25", "q75", "share denser", "Wilcoxon p", "Mann–Whitney p"])
        lines.append("")
    if card.get("generator"):
        lines += ["## Generator", "", *[f"- {k}: {_fmt(v)}" for k, v in card["generator"].items()], ""]
    if card.get("descriptors"):
        lines += ["## Descriptors per class (median [q25, q75])", ""]
        groups = list(card["descriptors"])
        names = [d for d in SUMMARY_DESCRIPTORS if d in card["descriptors"][groups[0]]]
        rows = []
        for d in names:
            cells = []
            for g in groups:
                s = card["descriptors"][g].get(d, {})
                cells.append(f"{_fmt(s.get('median'))} [{_fmt(s.get('q25'))}, {_fmt(s.get('q75'))}]" if s.get("n") else "–")
            rows.append([d, *cells])
        lines += [*_md_table(rows, ["descriptor", *[g if g == "all" else f"label {g}" for g in groups]]), ""]
    if card.get("notes"):
        lines += ["## Notes", *[f"- {s}" for s in card["notes"]], ""]
    return "\n".join(lines) + "\n"


def write_card(card: dict, table_path) -> tuple[Path, Path]:
    """Write ``card`` as ``<stem>.card.json`` and ``<stem>.card.md`` next to the table (atomically)."""
    md_path, json_path = card_paths(table_path)
    card = _clean(card)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(md_path, render_markdown(card))
    return md_path, json_path
