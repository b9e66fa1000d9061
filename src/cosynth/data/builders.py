"""The two datasets of the bias study, built from ``../shared/data`` (specs/bias-study.md).

* single-source: Materials Project polymorphs of formulas that have both an ICSD-tagged
  (positive) and a theoretical (negative) entry. Both classes come from one database and one
  relaxation protocol, so density is not a shortcut — but the shared set mixes origins
  (``structure_source``) with very different label base rates, a confound the card reports
  and the ``stratify_source``/``balance`` options control.
* mixed-source: experimental-origin positives vs negatives made by the CSPD-like generator for
  the same formulas, about 5:1 like the paper. Under covalent-radius scaling the negatives are
  denser than the positives of their own formulas — the paper's bias, measured in the card.

Both write ``<out>`` (columns id, formula, cif, label, source, split + provenance) and a card.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.data.cards import (
    card_paths,
    counts,
    descriptor_frame,
    descriptor_summary,
    paired_density_comparison,
    write_card,
)
from cosynth.data.generate import GeneratorConfig, covalent_volume, generate_negatives, reference_volumes
from cosynth.data.loaders import (
    CPUL_TABLE,
    EXTRA_TABLE,
    LABEL_LISTS,
    MP_TABLE,
    default_data_root,
    mp_labelled,
    mp_structures_labelled,
)
from cosynth.data.splits import assign_splits
from cosynth.data.table import CrystalTable

__all__ = ["build_single_source", "build_mixed_source", "literature_compositions", "validated_subset",
           "top_formulas"]

LITERATURE_TABLE = "mp_extra_structures/xiespp_literature_compositions.csv"

LABEL_MEANING = "1 = synthesizable (experimentally reported), 0 = not (theoretical / generated)"
MP_SOURCE_TEXT = (f"shared/data/{MP_TABLE}: Materials Project structures (CC BY 4.0) with ICSD/theoretical "
                  "labels — PU-CGCNN ICSD/virtual lists (label_icsd_pucgcnn), else SynCoTrain oxide labels")
BOTH_MP_SOURCE_TEXT = (f"shared/data/{MP_TABLE} and shared/data/{EXTRA_TABLE}: Materials Project structures "
                       f"(CC BY 4.0); labels from shared/data/{CPUL_TABLE} (CPUL, 2022), else PU-CGCNN, else "
                       "SynCoTrain")


def validated_subset(table: CrystalTable) -> tuple[CrystalTable, pd.DataFrame]:
    """Rows whose structure is ordered, well spaced and fits the image box (the voxel model's
    requirements, :func:`cosynth.io.validate_structure`); the others with their reason."""
    from cosynth.io.validate import validate_structure

    keep, errors = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = table.structures()
    for i, (rid, s) in enumerate(zip(table.frame["id"], structures)):
        if s is None:
            errors.append({"row": i, "id": rid, "error": "no structure (missing or unparsable CIF)"})
            continue
        try:
            validate_structure(s)
        except Exception as exc:
            errors.append({"row": i, "id": rid, "error": str(exc)})
            continue
        keep.append(i)
    return table.subset(np.asarray(keep, dtype=np.int64)), pd.DataFrame(errors, columns=["row", "id", "error"])


def top_formulas(frame: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` formulas with the most positive entries (ties: alphabetical) — "most studied"."""
    pos = frame[frame["label"] == 1].groupby("formula").size()
    order = sorted(pos.items(), key=lambda kv: (-kv[1], kv[0]))
    return [f for f, _ in order[:n]]


def literature_compositions(data_root=None, top: int = 108) -> list[str]:
    """The ``top`` compositions most mentioned in the literature (the XIE-SPP authors' ranking; its
    top 108 are very likely the bias-study paper's "108 most-studied compositions"), reduced."""
    from cosynth.data.table import normalize_formula
    from cosynth.io.files import read_table

    root = Path(data_root) if data_root is not None else default_data_root()
    ranked = read_table(root / LITERATURE_TABLE, dtype={"composition": str}).sort_values("rank")
    return list(dict.fromkeys(normalize_formula(c) for c in ranked["composition"].head(top)))


def _rng(seed: int, tag: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(tag.encode())])


def _strata(frame: pd.DataFrame, by_source: bool, min_count: int = 5) -> np.ndarray:
    """Label, or label × structure_source where every stratum is large enough to split."""
    label = frame["label"].astype(str)
    if not by_source:
        return label.to_numpy()
    joint = label + "|" + frame["structure_source"].astype(str)
    small = joint.map(joint.value_counts()) < min_count
    strata = pd.Series(np.where(small, label, joint), index=frame.index)
    for value in label[small].unique():  # too few leftovers of a label to split: they join its largest stratum
        leftovers = strata == value
        others = strata[(label == value) & ~leftovers]
        if leftovers.sum() < min_count and len(others):
            strata[leftovers] = others.value_counts().idxmax()
    return strata.to_numpy()


def _split_column(frame, fractions, seed, group_by_formula, by_source=False) -> np.ndarray:
    groups = frame["formula"].to_numpy() if group_by_formula else None
    return assign_splits(_strata(frame, by_source), fractions=fractions, seed=seed, groups=groups)


def _source_confound(frame: pd.DataFrame) -> dict:
    """How much the origin alone says about the label: positive rate per origin and the in-sample
    ROC AUC of a classifier that only sees the origin."""
    from sklearn.metrics import roc_auc_score

    rate = frame.groupby("structure_source")["label"].mean()
    out = {"positive_rate_by_structure_source": {k: round(float(v), 4) for k, v in rate.items()}}
    if frame["label"].nunique() == 2:
        out["source_only_auc"] = float(roc_auc_score(frame["label"], frame["structure_source"].map(rate)))
    return out


def _finish(table: CrystalTable, out, card: dict, descriptors: pd.DataFrame | None = None) -> CrystalTable:
    frame = table.frame
    desc = descriptors if descriptors is not None else descriptor_frame(table)
    card["counts"] = counts(frame)
    card["descriptors"] = descriptor_summary(frame, desc)
    card["errors"] = int(len(table.errors))
    if out is not None:
        table.write(out)
        card["table"] = Path(out).name
        if len(table.errors):
            md, _ = card_paths(out)
            errors_path = md.with_name(md.name.replace(".card.md", ".errors.csv"))
            table.errors.to_csv(errors_path, index=False)
            card.setdefault("notes", []).append(
                f"{len(table.errors)} rows/candidates left out, each with its reason, in {errors_path.name}")
        write_card(card, out)
    return table


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in ("id", "formula", "cif", "label", "source", "split") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


# ---- single-source -------------------------------------------------------------------------
def build_single_source(data_root=None, out=None, *, formulas=None, structure_sources=None,
                        literature_top: int | None = None, balance: bool = False, stratify_source: bool = False,
                        fractions=(60, 20, 20), seed: int = 0, group_by_formula: bool = False) -> CrystalTable:
    """MP polymorphs of formulas with both labels; see the module doc.

    Structures come from both MP folders of the shared data and labels from the first list that
    has the MP id: CPUL, PU-CGCNN, SynCoTrain (:func:`cosynth.data.loaders.mp_structures_labelled`).
    Rows whose structure fails :func:`cosynth.io.validate_structure` are dropped (and listed in the
    table's errors). The split is stratified by label.

    Args:
        data_root: the shared data folder (default: :func:`default_data_root`).
        out: write the table and its card here; None writes nothing.
        formulas, structure_sources: restrict the rows first.
        literature_top: keep only the N compositions most mentioned in the literature (108: the
            paper-like variant, :func:`literature_compositions`).
        balance: downsample the larger class to the smaller (within each structure_source when
            ``stratify_source``).
        stratify_source: also stratify the split by label × structure_source.
        fractions, seed: train/val/test split proportions; seed of the split and of balancing.
        group_by_formula: keep all rows of a formula in one split.

    Returns:
        The built CrystalTable.
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    labelled = mp_structures_labelled(root)
    labelled["structure_source"] = labelled["origin"]
    mp = CrystalTable.from_frame(labelled, id_column="material_id", formula_column="reduced_formula",
                                 cif_column="cif", parse=False)
    frame = mp.frame
    filters = [f"MP structures of both folders with a label ({' > '.join(LABEL_LISTS)}: the first list that has "
               "the id)"]
    mask = np.ones(len(frame), dtype=bool)
    if structure_sources:
        mask &= frame["structure_source"].isin(list(structure_sources)).to_numpy()
        filters.append(f"structure_source in {sorted(structure_sources)}")
    if formulas:
        from cosynth.data.table import normalize_formula

        wanted = {normalize_formula(f) for f in formulas}
        mask &= frame["formula"].isin(wanted).to_numpy()
        filters.append(f"formula in a list of {len(wanted)}")
    if literature_top:
        top = literature_compositions(root, literature_top)
        mask &= frame["formula"].isin(set(top)).to_numpy()
        filters.append(f"formula among the {literature_top} compositions most mentioned in the literature")
    table = mp.subset(mask)
    table, invalid = validated_subset(table)
    filters.append(f"structure passes cosynth.io.validate_structure (ordered, atoms ≥ 0.68 Å apart): "
                   f"{len(invalid)} rows dropped")
    frame = table.frame.copy()
    frame["label"] = frame["label"].astype(int)
    both = frame.groupby("formula")["label"].nunique()
    frame = frame[frame["formula"].isin(both[both == 2].index)]
    filters.append("formulas with both a positive and a negative polymorph")
    if balance:
        frame = _balance(frame, seed, by_source=stratify_source)
        filters.append("balanced: larger class downsampled" + (" within each structure_source" if stratify_source else ""))
    frame = frame.sort_values("id").reset_index(drop=True)
    frame["source"] = "materials_project"
    frame["split"] = _split_column(frame, fractions, seed, group_by_formula, by_source=stratify_source)
    built = CrystalTable(_order(frame), invalid, table._cache)
    card = {
        "title": "single-source synthesizability (MP ICSD vs theoretical polymorphs)",
        "command": "cosynth data build single-source" + (f" --literature-top {literature_top}" if literature_top else ""),
        "seed": seed,
        "summary": ("Offline analogue of the paper's single-source set (1,068 pos / 930 neg from MP v2022.10.28): "
                    "Materials Project structures of formulas with both ICSD-tagged and theoretical polymorphs."),
        "label_meaning": LABEL_MEANING,
        "source_meaning": "'materials_project' for every row; the structure's origin subset is in structure_source",
        "sources": [BOTH_MP_SOURCE_TEXT],
        "label_sources": {k: int(v) for k, v in frame["label_source"].value_counts().items()},
        "filters": filters,
        "split": {"fractions": list(fractions), "group_by_formula": group_by_formula,
                  "stratified_by": "label × structure_source" if stratify_source else "label"},
        "confounds": _source_confound(frame),
        "notes": ["structure_source mixes MP subsets with different label base rates (see confounds): a model can "
                  "score above chance from the origin alone; compare its AUC with source_only_auc, or rebuild "
                  "with --stratify-source --balance.",
                  "Not MP v2022.10.28 itself: structures are the offline subsets of MP; CPUL labels are a "
                  "snapshot close to it, PU-CGCNN and SynCoTrain fill ids CPUL lacks (label_sources)."],
    }
    return _finish(built, out, card)


def _balance(frame: pd.DataFrame, seed: int, by_source: bool) -> pd.DataFrame:
    parts = []
    groups = frame.groupby("structure_source") if by_source else [("all", frame)]
    for name, part in groups:
        n = part["label"].value_counts()
        if len(n) < 2:
            continue
        k = int(n.min())
        for lab in (0, 1):
            rows = part[part["label"] == lab].sort_values("id")
            pick = _rng(seed, f"balance:{name}:{lab}").permutation(len(rows))[:k]
            parts.append(rows.iloc[np.sort(pick)])
    return pd.concat(parts) if parts else frame.iloc[:0]


# ---- mixed-source --------------------------------------------------------------------------
def build_mixed_source(data_root=None, out=None, *, n_formulas: int = 108, formulas=None, ratio: float = 5.0,
                       volume: str = "covalent", fractions=(60, 20, 20), seed: int = 0,
                       group_by_formula: bool = False, max_prototypes: int = 15,
                       packing_fraction: float | None = None, min_distance_factor: float | None = None,
                       compare_scalings: bool = True) -> CrystalTable:
    """Experimental positives vs generated negatives of the same formulas; see the module doc.

    Negatives: the generator over all structures of the MP table as prototypes (never the target's own
    formula), deduplicated and with matches to the formula's positives dropped, then subsampled evenly
    across formulas to ``n_positives / ratio``. Positives and generated structures that fail
    :func:`cosynth.io.validate_structure` are dropped.

    Args:
        data_root: the shared data folder (default: :func:`default_data_root`).
        out: write the table and its card here; None writes nothing.
        n_formulas, formulas: target formulas: ``formulas``, else the ``n_formulas`` with the most positive
            polymorphs.
        ratio: positives per negative; ≤ 0 keeps every valid generated negative.
        volume: the generator's volume rule (``covalent``, ``reference`` or ``unchanged``).
        fractions, seed: train/val/test split proportions; seed of the generator, subsampling and split.
        group_by_formula: keep all rows of a formula in one split.
        max_prototypes, packing_fraction, min_distance_factor: generator options (:class:`GeneratorConfig`);
            None keeps the generator's default.
        compare_scalings: also record in the card the density comparison with the same negatives rescaled by
            each volume rule.

    Returns:
        The built CrystalTable.
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    mp = mp_labelled(root, parse=False)
    frame = mp.frame
    labelled = frame[frame["label"].notna()].assign(label=lambda d: d["label"].astype(int))
    if formulas:
        from cosynth.data.table import normalize_formula

        targets = list(dict.fromkeys(normalize_formula(f) for f in formulas))
        how = f"given list of {len(targets)} formulas"
    else:
        targets = top_formulas(labelled, n_formulas)
        how = f"the {len(targets)} formulas with the most positive (ICSD) polymorphs (ties alphabetical)"
    pos_mask = (frame["label"] == 1).fillna(False).to_numpy() & frame["formula"].isin(targets).to_numpy()
    positives, invalid = validated_subset(mp.subset(pos_mask))
    pos_structs = positives.structures()
    known: dict[str, list] = {}
    for rid, f, s in zip(positives.frame["id"], positives.frame["formula"], pos_structs):
        known.setdefault(f, []).append((rid, s))
    ref_vpa = reference_volumes(known)

    gen_options = {"volume": volume, "seed": seed, "max_prototypes": max_prototypes}
    if packing_fraction is not None:
        gen_options["packing_fraction"] = packing_fraction
    if min_distance_factor is not None:
        gen_options["min_distance_factor"] = min_distance_factor
    config = GeneratorConfig(**gen_options)
    generated = generate_negatives(list(known), mp, known=known, reference_volumes=ref_vpa, config=config)
    gen_ok, gen_invalid = validated_subset(generated)

    n_pos = len(positives)
    n_neg_target = int(round(n_pos / ratio)) if ratio > 0 else len(gen_ok)
    negatives = _even_subsample(gen_ok.frame, n_neg_target, seed)

    pos_frame = positives.frame.copy()
    pos_frame["label"] = 1
    pos_frame["source"] = "experimental"
    neg_frame = negatives.copy()
    neg_frame["reference_volume_per_atom"] = neg_frame["formula"].map(ref_vpa)
    both = pd.concat([pos_frame, neg_frame], ignore_index=True)
    keep_cols = ["id", "formula", "cif", "label", "source", "structure_source", "label_origin", "density_g_cm3",
                 "prototype_id", "prototype_formula", "substitution", "scaling", "volume_factor", "volume_per_atom",
                 "reference_volume_per_atom"]
    both = both[[c for c in keep_cols if c in both.columns]].sort_values(["label", "id"], ascending=[False, True])
    both = both.reset_index(drop=True)
    both["split"] = _split_column(both, fractions, seed, group_by_formula)
    cache = {**positives._cache, **gen_ok._cache}
    built = CrystalTable(_order(both), pd.concat([invalid, generated.errors, gen_invalid], ignore_index=True), cache)

    desc = descriptor_frame(built)
    dc = {f"{volume} (this table)": paired_density_comparison(built.frame["formula"], built.frame["label"],
                                                              desc["density"])}
    if compare_scalings:
        dc.update(_rescaled_comparison(built, ref_vpa, config))
        dc["note"] = ("Rows other than 'this table' rescale the same generated negatives by each rule "
                      "(covalent: covalent-radius spheres at packing fraction "
                      f"{config.packing_fraction:g}; reference: volume per atom at the median density of the formula's positives; "
                      "unchanged: prototype cell) and compare with the same positives. Ratio = median negative / "
                      "median positive density per formula.")
    formulas_with_neg = sorted(set(built.frame.loc[built.frame["label"] == 0, "formula"]))
    card = {
        "title": f"mixed-source synthesizability (experimental vs generated, {volume} scaling)",
        "command": "cosynth data build mixed-source",
        "seed": seed,
        "summary": ("Offline analogue of the paper's mixed-source set (COD positives vs CSPD negatives, 2,960 pos / "
                    "597 neg for 108 compositions): experimental-origin MP structures (ICSD-tagged) as positives, "
                    "CSPD-like generated polymorphs of the same formulas as negatives."),
        "label_meaning": LABEL_MEANING,
        "source_meaning": "'experimental' = positive, ICSD-tagged MP structure; 'generated' = negative from "
                          "cosynth data generate-negatives (prototype, substitution and scaling in their columns)",
        "sources": [MP_SOURCE_TEXT + " — positives: rows labelled 1 (stand-in for COD, which is not available "
                    "offline); prototype pool: every structure of that table",
                    "negatives: cosynth.data.generate (CSPD-like prototype substitution), not CSPD output"],
        "filters": [f"target formulas: {how}",
                    f"positives: label 1 rows of those formulas passing validate_structure ({len(invalid)} dropped)",
                    f"generated: {len(generated)} kept of {len(generated) + int((generated.errors['row'] >= 0).sum())} "
                    f"candidates tried (rejections: {_reasons(generated.errors)}); {len(gen_invalid)} failed validation",
                    f"negatives subsampled evenly across formulas to n_pos/ratio = {n_pos}/{ratio:g} → "
                    f"{len(neg_frame)} (available {len(gen_ok)})"],
        "target_formulas": list(known),
        "formulas_with_negatives": len(formulas_with_neg),
        "generator": {**config.__dict__, "reference_volumes": "volume/atom giving the median density of the formula's positives"},
        "split": {"fractions": list(fractions), "group_by_formula": group_by_formula, "stratified_by": "label"},
        "density_comparison": dc,
        "notes": ["Generated structures are unrelaxed, like CSPD's; positives are DFT-relaxed MP structures.",
                  "Positives come from MP's ICSD-tagged entries, not COD: fewer polymorphs per formula than the paper."],
    }
    return _finish(built, out, card, desc)


def _reasons(errors: pd.DataFrame) -> str:
    kinds = errors["error"].str.extract(r"^(short contact|duplicate of|matches known|no prototype|no reference|"
                                        r"substitution failed)")[0].fillna("other")
    return ", ".join(f"{k} {v}" for k, v in kinds.value_counts().items()) or "none"


def _even_subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows spread as evenly as possible over formulas (round robin, seeded order)."""
    if n >= len(frame):
        return frame.copy()
    queues = {}
    for formula, part in frame.groupby("formula", sort=True):
        part = part.sort_values("id")
        queues[formula] = list(part.index[_rng(seed, f"neg:{formula}").permutation(len(part))])
    # formulas visit in a seeded order, so a cut-off round does not favour early letters
    names = sorted(queues)
    names = [names[k] for k in _rng(seed, "neg:formula-order").permutation(len(names))]
    chosen, r = [], 0
    while len(chosen) < n:
        for formula in names:
            if r < len(queues[formula]) and len(chosen) < n:
                chosen.append(queues[formula][r])
        r += 1
    return frame.loc[sorted(chosen)].copy()


def _rescaled_comparison(table: CrystalTable, ref_vpa: dict, config: GeneratorConfig) -> dict:
    """Density comparison of the same generated negatives under each volume rule."""
    frame = table.frame
    structures = table.structures()
    pos = (frame["label"] == 1).to_numpy()
    out = {}
    for mode in ("covalent", "reference", "unchanged"):
        dens = np.full(len(frame), np.nan)
        for i, s in enumerate(structures):
            if s is None:
                continue
            if pos[i]:
                dens[i] = s.density
                continue
            if mode == "covalent":
                vol = covalent_volume(s, config.packing_fraction)
            elif mode == "reference":
                vol = ref_vpa[frame["formula"].iat[i]] * len(s)
            else:
                vol = s.volume / float(frame["volume_factor"].iat[i])
            dens[i] = s.density * s.volume / vol  # mass is fixed, density ∝ 1 / volume
        out[f"{mode} (same negatives rescaled)"] = paired_density_comparison(frame["formula"], frame["label"], dens)
    return out
