"""The synthesizability benchmark end to end: baselines, candidates, one test table, the default model.

Stages (each resumable from what an earlier run left in the work folder):

1. the frozen split of every labelled MP structure (:mod:`cosynth.data.synth_benchmark`);
2. baselines on the same rows: origin only, density only, the audit's descriptor trees, Roost
   on compositions, energy above hull and PU-CGCNN's CLscore (where known; CLscore is leaky: it
   was trained on these labels), and the published XIE-SPP weights;
3. candidates, chosen by validation only: de-CGCNN, COSNet (structures plus composition-only
   rows, modal-availability augmentation), each with and without per-origin class balancing,
   the voxel CNN, per-crystal descriptor trees, and a stack of them under one logistic layer
   (its inputs chosen, and its validation scores computed, out of fold on validation);
4. every score calibrated on validation (Platt scaling: monotone, so rankings stay), judged on
   test with :func:`cosynth.evaluate.benchmark.score_report`, written as Markdown, JSON and
   figures; the winner is exported with its calibration and a generated card.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from cosynth.io.files import atomic_write_json, atomic_write_text, write_table

LABEL = "label"
SPLITS = ("train", "val", "test")


@dataclass
class BenchmarkConfig:
    """Everything that decides the benchmark's numbers (stored in the report)."""

    seed: int = 0
    epochs: int = 20
    # per-candidate epochs, chosen on validation (COSNet without balancing still gained from 20 to 40
    # epochs, its best checkpoint at epoch 25; with balancing it did not; its energy-aware twin gets
    # the same as COSNet): they override ``epochs``
    candidate_epochs: dict = field(default_factory=lambda: {"cosnet": 40, "cosnet_energy": 40})
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-4
    composition_rows: int | None = 20000  # composition-only training rows for Roost/COSNet (None: all)
    xiespp_ensemble: int = 2
    voxel_epochs: int = 0  # 0: no voxel candidate in this run
    voxel_lr: float = 1e-4
    voxel_max_minutes: float | None = None
    voxel_ensemble: int = 2  # rotations per crystal when scoring the voxel CNN (as for XIE-SPP)
    n_boot: int = 200
    decoys: int = 3000  # squeezed or stretched training positives (:func:`decoys`), negatives for the per-crystal trees
    test_decoys: int = 1000  # decoys of test positives, on which every model that reads a structure is judged
    # the per-crystal trees' HistGradientBoostingClassifier settings to choose from on validation
    # (:func:`choose_tree_settings`): the audit's shallow trees, then larger ones
    tree_grid: tuple = ({"max_depth": 3, "max_iter": 100, "learning_rate": 0.1, "min_samples_leaf": 10},
                        {"max_leaf_nodes": 31, "max_iter": 400, "learning_rate": 0.05, "min_samples_leaf": 20},
                        {"max_leaf_nodes": 63, "max_iter": 800, "learning_rate": 0.03, "min_samples_leaf": 20,
                         "l2_regularization": 1.0})
    quick: bool = False
    max_rows: int | None = None  # quick runs: this many structures (whole formulas)
    candidates: tuple = ("cgcnn", "cgcnn_balanced", "cosnet", "cosnet_balanced", "cosnet_energy")
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick_run(cls) -> "BenchmarkConfig":
        return cls(epochs=2, candidate_epochs={}, composition_rows=200, xiespp_ensemble=1, n_boot=20, quick=True,
                   max_rows=240, batch_size=32, candidates=("cgcnn", "cosnet_balanced", "cosnet_energy"), voxel_epochs=1)

    def epochs_of(self, name: str) -> int:
        """Epochs of one graph model (a candidate or the Roost baseline)."""
        return int(self.candidate_epochs.get(name, self.epochs))


# settings that decide only the per-crystal trees (and so the stack) or the judgement on decoys, which a
# run redoes whenever they differ: they never stop a run from reusing the other scores
REFITTED = ("decoys", "test_decoys", "tree_grid")


def _subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Whole formulas, in a seeded order, until about ``n`` rows; every split keeps both classes."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x51]))
    keep = []
    for name in SPLITS:
        part = frame[frame["split"] == name]
        formulas = part["formula"].unique()
        rng.shuffle(formulas)
        chosen, count = [], 0
        target = n * {"train": 0.6, "val": 0.2, "test": 0.2}[name]
        for f in formulas:
            if count >= target and part[part["formula"].isin(chosen)][LABEL].nunique() == 2:
                break
            chosen.append(f)
            count += int((part["formula"] == f).sum())
        keep.append(part[part["formula"].isin(chosen)])
    return pd.concat(keep).sort_values("id").reset_index(drop=True)


def origin_balance_weights(origin, labels) -> np.ndarray:
    """Loss weights that give both classes the same total weight within every origin of the
    training rows, so that knowing a row's origin says nothing about its label (mean weight 1)."""
    origin, labels = np.asarray(origin).astype(str), np.asarray(labels).astype(int)
    w = np.ones(len(labels), dtype=np.float64)
    for o in np.unique(origin):
        idx = np.flatnonzero(origin == o)
        y = labels[idx]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos and n_neg:
            w[idx] = np.where(y == 1, len(idx) / (2 * n_pos), len(idx) / (2 * n_neg))
    return (w / w.mean()).astype(np.float32)


# ---- baselines --------------------------------------------------------------------------------
def density_sign(frame: pd.DataFrame, densities: np.ndarray) -> float:
    """+1 or -1: the sign under which density alone ranks the training rows better than chance."""
    from sklearn.metrics import roc_auc_score

    train = (frame["split"] == "train").to_numpy() & np.isfinite(densities)
    return 1.0 if roc_auc_score(frame[LABEL].to_numpy()[train], densities[train]) >= 0.5 else -1.0


def density_scores(frame: pd.DataFrame, densities: np.ndarray) -> np.ndarray:
    """Density alone, signed so that it ranks the training rows better than chance."""
    return density_sign(frame, densities) * densities


def platt(val_scores: np.ndarray, val_labels: np.ndarray) -> tuple[float, float]:
    """(a, b) of the logistic map p = σ(a·s + b) fitted on validation scores (rankings unchanged)."""
    from sklearn.linear_model import LogisticRegression

    keep = np.isfinite(val_scores)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(val_scores[keep, None], val_labels[keep])
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


# ---- the study --------------------------------------------------------------------------------
class Benchmark:
    """One benchmark run: its work folder, its table and the scores of every model, on every row."""

    def __init__(self, work, config: BenchmarkConfig, data_root=None, progress: bool = False):
        from cosynth.data.synth_benchmark import benchmark_table

        self.work, self.config, self.progress = Path(work), config, progress
        self.work.mkdir(parents=True, exist_ok=True)
        table_path = self.work / "benchmark.parquet"
        if table_path.exists():
            self.frame = pd.read_parquet(table_path)
        else:
            frame = benchmark_table(data_root, seed=config.seed)
            if config.max_rows:
                frame = _subsample(frame, config.max_rows, config.seed)
            write_table(frame, table_path)
            self.frame = frame
        self.data_root = data_root
        self.scores_path = self.work / "scores.parquet"
        self.scores = pd.read_parquet(self.scores_path) if self.scores_path.exists() else pd.DataFrame(
            {"id": self.frame["id"]})
        self.seconds: dict[str, float] = {}
        self.trained: set[str] = set()  # candidates trained by this run (not reused)
        self.stored: set[str] = set()  # every score this run stored (new or replaced)
        self.per_crystal = None  # the per-crystal trees, once fitted in this run (:func:`per_crystal_trees`)
        self.tree_inputs = None  # what they read, once computed in this run (:func:`per_crystal_inputs`)
        self._hull = None  # the reference hull, once built in this run (:meth:`hull`)
        self._energies = None  # every structure's CHGNet energy per atom, once read in this run (:meth:`energies`)

    def table(self):
        """The rows as a :class:`cosynth.data.table.CrystalTable` (structures parsed on demand)."""
        from cosynth.data.table import CrystalTable

        return CrystalTable.from_frame(self.frame[["id", "formula", "cif", LABEL, "split"]], parse=False)

    def descriptors(self) -> pd.DataFrame:
        """The audit's descriptors of every structure (computed once, then kept in the work folder)."""
        from cosynth.audit.audit import describe_table

        path = self.work / "descriptors.parquet"
        if (kept := kept_descriptors(path)) is not None:
            return kept
        described = describe_table(self.table(), cache_dir=self.work / "descriptors", progress=self.progress)
        write_table(described, path)
        return described

    def energies(self) -> np.ndarray:
        """Every structure's CHGNet energy per atom (from the energy cache after the first run)."""
        from cosynth.represent.energy import structure_energies

        if self._energies is None:
            self._energies = structure_energies(self.table().structures(), progress=self.progress)[
                "energy_per_atom"].to_numpy(float)
        return self._energies

    def hull(self):
        """The reference hull of the per-crystal trees: the lowest CHGNet energy of each formula of the
        table (every split; labels unused), and simple lattices for elements that have no crystal of
        their own in it (computed once, then kept in the work folder)."""
        from cosynth.represent.energy import Hull, element_references

        if self._hull is None:
            energies = self.energies()
            path = self.work / "element_references.json"
            missing = Hull.of(self.frame["formula"], energies).missing_elements(self.frame["formula"])
            kept = json.loads(path.read_text()) if path.exists() else {}
            if set(missing) - set(kept):
                kept = {**kept, **element_references(sorted(set(missing) - set(kept)))}
                atomic_write_json(path, kept)
            self._hull = Hull.of(self.frame["formula"], energies, {e: kept[e] for e in missing})
        return self._hull

    def has(self, name: str) -> bool:
        return name in self.scores.columns

    def store(self, name: str, values: np.ndarray, seconds: float) -> None:
        self.scores[name] = np.asarray(values, float)
        self.stored.add(name)
        self.seconds[name] = round(seconds, 1)
        write_table(self.scores, self.scores_path)
        timing = self.work / "seconds.json"
        saved = json.loads(timing.read_text()) if timing.exists() else {}
        atomic_write_json(timing, {**saved, name: round(seconds, 1)})

    def _split_frames(self, weighted: bool, with_compositions: bool, energy: bool = False) -> dict[str, pd.DataFrame]:
        """Frames for the bimodal trainer: structures (+ composition-only training rows, + the energy
        above the hull of the training rows that have it, as an auxiliary target)."""
        f = self.frame
        base = pd.DataFrame({"id": f["id"], "formula": f["formula"], "cif": f["cif"], "target": f[LABEL].astype(float),
                             "structure_status": "ok", "origin": f["origin"], "split": f["split"]})
        if energy:
            base["aux"] = np.where(f["split"] == "train", energy_target(f["e_above_hull"]), np.nan)
        if with_compositions:
            comps = self.compositions()
            base = pd.concat([base, pd.DataFrame({"id": comps["id"], "formula": comps["formula"], "cif": None,
                                                  "target": comps[LABEL].astype(float), "structure_status": "none",
                                                  "origin": comps["origin"], "split": "train"})], ignore_index=True)
        if weighted:
            train = (base["split"] == "train").to_numpy()
            base["weight"] = 1.0
            base.loc[train, "weight"] = origin_balance_weights(base.loc[train, "origin"], base.loc[train, "target"])
        return {k: base[base["split"] == k].drop(columns="split").reset_index(drop=True) for k in SPLITS}

    def compositions(self) -> pd.DataFrame:
        """The composition-only training rows (read once, then kept in the work folder)."""
        from cosynth.data.synth_benchmark import composition_rows

        path = self.work / "compositions.parquet"
        if path.exists():
            return pd.read_parquet(path)
        comps = composition_rows(self.data_root, exclude_formulas=set(self.frame["formula"]))
        n = self.config.composition_rows
        if n is not None and len(comps) > n:
            comps = comps.sample(n=n, random_state=self.config.seed).sort_values("id")
        write_table(comps, path)
        return comps

    def fit_graph(self, name: str, family: str, *, weighted: bool, compositions: bool, energy: bool = False,
                  mode: str = "bimodal_aug"):
        """Train one graph-family classifier; its model file, loaded."""
        from cosynth.models.registry import load_model
        from cosynth.training.bimodal import FitConfig, fit

        c = self.config
        config = FitConfig(model=family, mode=mode, task="classification", epochs=c.epochs_of(name), lr=c.lr,
                           weight_decay=c.weight_decay, batch_size=c.batch_size, seed=c.seed, threads=None,
                           extra={"weights": "per-origin class balance" if weighted else "none",
                                  "composition_rows": c.composition_rows if compositions else 0,
                                  **({"aux": ENERGY_WORDS} if energy else {})})
        run = self.work / "runs" / name
        fit(self._split_frames(weighted, compositions, energy), run, config, progress=False, verbose=True)
        return load_model(run / "model.pt")

    def model_scores(self, loaded, *, ensemble: int = 1, splits=("val", "test")) -> np.ndarray:
        """Scores (logits of the likelihood) of a model file's predictions for the rows of ``splits``,
        through the same path as ``cosynth predict``; NaN for the other rows."""
        rows = self.frame["split"].isin(splits).to_numpy()
        out = np.full(len(self.frame), np.nan)
        out[rows] = logits_of(loaded, self.frame.loc[rows, ["id", "formula", "cif"]], ensemble=ensemble,
                              seed=self.config.seed, progress=self.progress)
        return out


def logits_of(loaded, frame: pd.DataFrame, *, ensemble: int = 1, seed: int = 0, progress: bool = False) -> np.ndarray:
    """A model's likelihoods for the rows of ``frame`` (id, formula, cif) through the same path as
    ``cosynth predict``, as logits in the rows' order; NaN where a row could not be predicted."""
    from cosynth.models.registry import LoadedModel
    from cosynth.models.stack import likelihood_logit

    if loaded.meta.get("domain"):  # domain scores never change a likelihood, and cost forward passes
        loaded = LoadedModel(loaded.network, {k: v for k, v in loaded.meta.items() if k != "domain"})
    pred = loaded.predict(frame, ensemble=ensemble, seed=seed, progress=progress).crystals
    return likelihood_logit(pred.set_index("id")["likelihood"].reindex(frame["id"]).to_numpy(float))


def kept_descriptors(path: Path, also: tuple = ()) -> pd.DataFrame | None:
    """A descriptor table kept in the work folder, unless it is missing or lacks a descriptor this
    version computes, or a column of ``also`` (it is then computed again)."""
    from cosynth.represent.descriptors import DESCRIPTORS

    if not path.exists():
        return None
    kept = pd.read_parquet(path)
    return kept if {*DESCRIPTORS, *also} <= set(kept.columns) else None


def reuse_report_scores(bench: Benchmark, report: Path) -> list[str]:
    """Start a new work folder from the scores a report folder kept (``scores.parquet``), so that
    only what is new trains; only when that report ran on the same split with the same settings
    (its candidates aside). Returns the names reused (none when the work folder has scores)."""
    from cosynth.data.synth_benchmark import split_fingerprint
    from cosynth.experiments.synth_benchmark_report import SCORES_FILE

    report = Path(report)
    if bench.scores_path.exists() or not (report / SCORES_FILE).exists():
        return []
    saved = json.loads((report / "benchmark.json").read_text())

    def settings(config: dict) -> dict:  # what decides the reused scores: candidates new since then aside
        kept = {k: v for k, v in config.items() if k != "candidates" and k not in REFITTED}
        kept["candidate_epochs"] = {k: v for k, v in config["candidate_epochs"].items() if k in saved["candidates"]}
        return json.loads(json.dumps(kept))

    if saved["split_fingerprint"] != split_fingerprint(bench.frame):
        raise ValueError(f"{report} was run on another split ({saved['split_fingerprint']}); drop --reuse-scores")
    before, now = settings(saved["config"]), settings(asdict(bench.config))
    if before != now:
        changed = sorted(k for k in now if before.get(k) != now[k])
        raise ValueError(f"{report} was run with other settings ({', '.join(changed)}); drop --reuse-scores")
    kept = pd.read_parquet(report / SCORES_FILE)
    bench.scores = bench.frame[["id"]].merge(kept, on="id", how="left")
    write_table(bench.scores, bench.scores_path)
    atomic_write_json(bench.work / "seconds.json", saved["seconds"])
    for state, file in (("voxel", VOXEL_STATE), ("trees", TREE_STATE), ("stack", STACK_STATE)):
        if saved.get(state):
            atomic_write_json(bench.work / file, saved[state])
    return [c for c in kept.columns if c != "id"]


ENERGY_CAP = 0.5  # eV/atom
ENERGY_WORDS = f"energy above the hull, capped at {ENERGY_CAP} eV/atom, in units of 0.1 eV/atom"


def energy_target(e_above_hull) -> np.ndarray:
    """The auxiliary target of the energy-aware candidates: energy above the hull, capped (how far
    beyond the cap hardly matters to synthesizability, and it would dominate a squared error) and
    in units of 0.1 eV/atom; NaN where unknown."""
    e = pd.to_numeric(pd.Series(e_above_hull), errors="coerce").to_numpy(float)
    return np.clip(e, 0.0, ENERGY_CAP) / 0.1


def run_baselines(bench: Benchmark, *, xiespp_weights: Path | None) -> None:
    """Every baseline's score on every row (skipping those already stored)."""
    from cosynth.audit.baselines import descriptor_scores, origin_scores

    f = bench.frame
    if not bench.has("origin_only"):
        t0 = time.perf_counter()
        bench.store("origin_only", origin_scores(f, label=LABEL), time.perf_counter() - t0)
    if not bench.has("descriptor_trees") or not bench.has("density_only"):
        t0 = time.perf_counter()
        described = bench.descriptors()
        fitted = descriptor_scores(bench.table(), seed=bench.config.seed, described=described)
        bench.store("density_only", density_scores(f, described["density"].to_numpy(float)), 0.0)
        bench.store("descriptor_trees", fitted[0], time.perf_counter() - t0)
    for column, sign in (("e_above_hull", -1.0), ("clscore_pucgcnn", 1.0)):
        if not bench.has(column):
            bench.store(column, sign * pd.to_numeric(f[column], errors="coerce").to_numpy(float), 0.0)
    if not bench.has("roost_composition"):
        t0 = time.perf_counter()
        loaded = bench.fit_graph("roost", "roost", weighted=False, compositions=True, mode="composition")
        bench.store("roost_composition", bench.model_scores(loaded), time.perf_counter() - t0)
    if xiespp_weights is not None and Path(xiespp_weights).exists() and not bench.has("xiespp_published"):
        from cosynth.models.registry import published_xiespp

        t0 = time.perf_counter()
        loaded = published_xiespp(xiespp_weights)
        bench.store("xiespp_published", bench.model_scores(loaded, ensemble=bench.config.xiespp_ensemble),
                    time.perf_counter() - t0)


PER_CRYSTAL_TREES = "descriptor_trees_per_crystal"


# descriptors the trees leave out: a cell's atom count depends on the cell one picks, so the same
# crystal in its conventional cell would score otherwise than in its primitive one (distinct_sites
# says how complex a crystal is whatever its cell)
CELL_DEPENDENT = ("n_sites",)


def per_crystal_descriptor_names() -> list[str]:
    """The descriptors of one crystal alone that the trees read: the audit's numeric ones that do not
    depend on the cell chosen, how its atoms are surrounded
    (:data:`cosynth.represent.descriptors.LOCAL_STRUCTURE`), and its energy above the reference
    hull (:data:`cosynth.represent.energy.ABOVE_HULL`)."""
    from cosynth.audit.audit import DEFAULT_STRUCTURE
    from cosynth.represent.descriptors import CATEGORICAL, LOCAL_STRUCTURE
    from cosynth.represent.energy import ABOVE_HULL

    return ([d for d in DEFAULT_STRUCTURE if d not in CATEGORICAL and d not in CELL_DEPENDENT]
            + list(LOCAL_STRUCTURE) + [ABOVE_HULL])


# what a composition leads one to expect (gold is twelve-fold coordinated, not four-fold)
EXPECTED = ("volume_per_atom", "packing_fraction", "min_distance", "coordination_mean")


def tree_recipe(config: "BenchmarkConfig") -> dict:
    """What decides the per-crystal trees, kept with their chosen settings: trees made another way
    (other features, decoys or grid) are chosen again."""
    from cosynth.represent.energy import ENERGY_MODEL

    return {"descriptors": per_crystal_descriptor_names(), "expected": list(EXPECTED), "energy": ENERGY_MODEL,
            "decoys": config.decoys, "decoy_kinds": list(TRAINING_DECOYS),
            "grid": json.loads(json.dumps(config.tree_grid))}


# a strained decoy's volume over its original's
DECOY_VOLUMES = {"squeezed": (0.6, 0.8), "stretched": (1.3, 1.6)}
EXPECTING_FOLDS = 5


class PerCrystalTrees(NamedTuple):
    classifier: object  # HistGradientBoostingClassifier on :func:`cosynth.models.stack.tree_features`
    expecting: dict  # descriptor of EXPECTED -> HistGradientBoostingRegressor of its log on the composition
    elements: list  # the composition features' elements
    probability: np.ndarray  # the classifier's, for every row


DECOY_KINDS = (*DECOY_VOLUMES, "moved")  # how a decoy differs from the positive it was made from
# the trees train on strained decoys only: moved ones (a probe, 2,000 of 6,000) gained nothing on
# validation and left gold in the diamond structure where it was (RUN_NOTES); they stay a test of every model
TRAINING_DECOYS = tuple(DECOY_VOLUMES)
DECOY_WORDS = "{} strained copies of training positives (volume x0.6-0.8 or x1.3-1.6)"


def _by_role(composition) -> list:
    """A composition's elements, fewest atoms first, then by electronegativity: the order in which one
    composition's elements take the places of another's of the same stoichiometry (anion to anion)."""
    return sorted(composition, key=lambda e: (composition[e], np.nan_to_num(getattr(e, "X", 0.0)), str(e)))


def moved_structure(structure, composition, volume_per_atom: float):
    """``structure`` (a donor of the same stoichiometry) with the elements of ``composition`` in its
    places and that composition's own volume per atom: right atoms, right density, wrong arrangement."""
    donor = structure.composition.reduced_composition
    moved = structure.copy()
    moved.replace_species(dict(zip(_by_role(donor), _by_role(composition))))
    moved.scale_lattice(volume_per_atom * len(moved))
    return moved


def decoys(bench: Benchmark, split: str, n: int, kinds: tuple = DECOY_KINDS) -> pd.DataFrame:
    """Decoy negatives made from positives of one split (seeded; kept in the work folder), each of a
    kind drawn from ``kinds``: squeezed or stretched far from any made crystal (:data:`DECOY_VOLUMES`),
    or moved into the structure of a training crystal of the same stoichiometry and another space
    group, at their own volume per atom (gold in the diamond structure). One row each: the
    descriptors, ``source`` (the positive's row), ``kind`` and ``cif``; a decoy that cannot be made or
    described is left out."""
    from pymatgen.core import Composition, Structure

    from cosynth.represent.descriptors import compute_descriptors
    from cosynth.represent.energy import ABOVE_HULL, above_hull

    path = bench.work / f"decoys_{split}_{n}_{'_'.join(kinds)}.parquet"
    if (kept := kept_descriptors(path, also=(ABOVE_HULL,))) is not None:
        return kept
    f, described = bench.frame, bench.descriptors()
    seed = bench.config.seed
    rng = np.random.default_rng(seed if split == "train" else [seed, SPLITS.index(split)])  # train: as ever
    positives = np.flatnonzero((f["split"] == split).to_numpy() & (f[LABEL].to_numpy(int) == 1))
    source = np.sort(rng.choice(positives, min(n, len(positives)), replace=False))
    pattern, donors = {}, {}  # a moved decoy's donors: training crystals of the same stoichiometry
    if "moved" in kinds:
        train = np.flatnonzero((f["split"] == "train").to_numpy())
        pattern = {i: Composition(f["formula"].iloc[i]).anonymized_formula for i in {*train, *source}}
        for i in train:
            donors.setdefault(pattern[i], []).append(i)
    group = described["spacegroup_number"].to_numpy(float)
    structures, drawn = [], []
    for i in source:
        kind = kinds[rng.integers(len(kinds))]
        drawn.append(kind)
        factor = rng.uniform(*DECOY_VOLUMES[kind]) if kind in DECOY_VOLUMES else None  # drawn before any reading
        try:
            if factor is not None:
                structure = Structure.from_str(f["cif"].iloc[i], fmt="cif")
                structure.scale_lattice(structure.volume * factor)
            else:
                others = [j for j in donors.get(pattern[i], []) if group[j] != group[i]]
                donor = Structure.from_str(f["cif"].iloc[others[rng.integers(len(others))]], fmt="cif")
                structure = moved_structure(donor, Composition(f["formula"].iloc[i]),
                                            described["volume_per_atom"].iloc[i])
        except Exception:  # noqa: BLE001 - no donor, or an unreadable one: no decoy from this positive
            structure = None
        structures.append(structure)
    formulas = f["formula"].iloc[source].tolist()
    made = compute_descriptors(formulas, structures, use_cache=False, progress=bench.progress)
    made[ABOVE_HULL] = above_hull(formulas, structures, bench.hull(), progress=bench.progress)
    made = made.assign(source=source, kind=drawn, cif=[s.to(fmt="cif") if s is not None else None for s in structures])
    made = made[made["descriptor_error"].isna().to_numpy() & made["cif"].notna().to_numpy()].reset_index(drop=True)
    write_table(made, path)
    return made


TREE_STATE = "trees.json"


def tree_state(bench: Benchmark) -> dict | None:
    """The per-crystal trees' settings this work folder chose, and what each one tried scored."""
    path = bench.work / TREE_STATE
    return json.loads(path.read_text()) if path.exists() else None


def per_crystal_trees(bench: Benchmark) -> PerCrystalTrees:
    """The per-crystal trees at their chosen settings, fitted once a run: their own candidate row
    and the stack share them."""
    if bench.per_crystal is None:
        bench.per_crystal = fit_per_crystal_trees(bench, tree_state(bench)["settings"])
    return bench.per_crystal


def choose_tree_settings(bench: Benchmark) -> PerCrystalTrees:
    """Fit the per-crystal trees at each of :attr:`BenchmarkConfig.tree_grid` and keep the settings
    under which the stack's forward selection reaches the best out-of-fold validation score."""
    tried, best = [], None
    for settings in bench.config.tree_grid:
        fitted = fit_per_crystal_trees(bench, settings)
        bench.scores[PER_CRYSTAL_TREES] = fitted.probability  # what the stack would read (stored by the caller)
        inputs, score = choose_stack_inputs(bench, stack_pool(bench))
        tried.append({"settings": settings, "stack_inputs": inputs, "validation_score": score})
        if best is None or score > best[0]:
            best = (score, settings, fitted)
    atomic_write_json(bench.work / TREE_STATE, {"settings": best[1], "tried": tried, "recipe": tree_recipe(bench.config)})
    bench.per_crystal = best[2]
    return best[2]


class TreeInputs(NamedTuple):
    expecting: dict  # descriptor of EXPECTED -> HistGradientBoostingRegressor of its log on the composition
    elements: list  # the composition features' elements
    features: np.ndarray  # the classifier's features of every row
    fit_features: np.ndarray  # those it is fitted on: the training rows, then the decoys
    fit_labels: np.ndarray


def table_descriptors(bench: Benchmark) -> pd.DataFrame:
    """The table's descriptors and each crystal's energy above the reference hull: what the
    per-crystal trees read (the energies kept in the work folder)."""
    from cosynth.represent.energy import ABOVE_HULL

    path = bench.work / "above_hull.parquet"
    if path.exists():
        energy = pd.read_parquet(path)[ABOVE_HULL].to_numpy(float)
    else:  # the energies the hull was built from: the structures are parsed once
        energy = bench.hull().above(bench.frame["formula"].tolist(), bench.energies())
        write_table(pd.DataFrame({"id": bench.frame["id"], ABOVE_HULL: energy}), path)
    return bench.descriptors().assign(**{ABOVE_HULL: energy})


def per_crystal_inputs(bench: Benchmark) -> TreeInputs:
    """What the per-crystal trees read, whatever their settings (computed once a run). Their
    features: the crystal's own descriptors and, for each of :data:`EXPECTED`, its log minus what
    trees on the composition expect; a training row's expectation comes from trees fitted without
    its formula's fold, as a new crystal's would. They are fitted on the training rows and the decoys."""
    if bench.tree_inputs is not None:
        return bench.tree_inputs
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import GroupKFold

    from cosynth.models.stack import composition_features, tree_features

    f, described, seed = bench.frame, table_descriptors(bench), bench.config.seed
    train = (f["split"] == "train").to_numpy()
    elements = sorted({e.symbol for formula in f.loc[train, "formula"] for e in _elements(formula)})
    composition = composition_features(described, f["formula"].tolist(), elements)
    rows = np.flatnonzero(train)
    folds = np.full(len(f), -1)
    for k, (_, held) in enumerate(GroupKFold(EXPECTING_FOLDS).split(rows, groups=f["formula"].to_numpy()[rows])):
        folds[rows[held]] = k

    def expecting(fit_rows, target):
        fit_rows = fit_rows & np.isfinite(target)
        return HistGradientBoostingRegressor(max_iter=300, random_state=seed).fit(composition[fit_rows], target[fit_rows])

    models, expected = {}, {}
    for d in EXPECTED:
        with np.errstate(divide="ignore"):
            target = np.log(described[d].to_numpy(float))
        models[d] = expecting(train, target)
        expected[d] = models[d].predict(composition)
        for k in range(EXPECTING_FOLDS):
            expected[d][folds == k] = expecting(train & (folds != k), target).predict(composition[folds == k])
    names = per_crystal_descriptor_names()
    features = tree_features(described, names, expected)
    made = decoys(bench, "train", bench.config.decoys, TRAINING_DECOYS)
    source = made["source"].to_numpy(int)
    decoy_features = tree_features(made, names, {d: expected[d][source] for d in EXPECTED})  # composition: theirs
    bench.tree_inputs = TreeInputs(models, elements, features, np.vstack([features[train], decoy_features]),
                                   np.concatenate([f[LABEL].to_numpy(int)[train], np.zeros(len(source), int)]))
    return bench.tree_inputs


def fit_per_crystal_trees(bench: Benchmark, settings: dict) -> PerCrystalTrees:
    """The descriptor trees of one crystal alone at ``settings`` (seeded, so a refit is the same model)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    inputs = per_crystal_inputs(bench)
    classifier = HistGradientBoostingClassifier(random_state=bench.config.seed, **settings).fit(
        inputs.fit_features, inputs.fit_labels)
    return PerCrystalTrees(classifier, inputs.expecting, inputs.elements, classifier.predict_proba(inputs.features)[:, 1])


def _elements(formula: str):
    from pymatgen.core import Composition

    return [getattr(e, "element", e) for e in Composition(formula).elements]


class Candidate(NamedTuple):
    family: str
    balanced: bool  # per-origin class balancing of the training loss
    compositions: bool  # composition-only training rows
    energy: bool  # the energy above the hull as an auxiliary target, where known
    words: str


CANDIDATES = {
    "cgcnn": Candidate("cgcnn", False, False, False, "de-CGCNN classifier on the structures"),
    "cgcnn_balanced": Candidate("cgcnn", True, False, False, "de-CGCNN with per-origin class balancing"),
    "cosnet": Candidate("cosnet", False, True, False, "COSNet: structures plus composition-only rows, "
                        "modal-availability augmentation"),
    "cosnet_balanced": Candidate("cosnet", True, True, False, "COSNet with per-origin class balancing"),
    "cosnet_energy": Candidate("cosnet", False, True, True, "COSNet that also learns the energy above the hull of "
                               "the training structures that have it (an auxiliary output, weight 1; "
                               f"{ENERGY_WORDS}), so that its structure branch must tell polymorphs apart by "
                               "stability"),
}


def candidate_words(name: str, voxel: dict | None, config: BenchmarkConfig, stack_state: dict | None = None,
                    trees: dict | None = None) -> str:
    """What a candidate is, in words (with its epochs; the voxel CNN with how far it was trained)."""
    if name in CANDIDATES:
        return f"{CANDIDATES[name].words}, {config.epochs_of(name)} epochs (best validation loss kept)"
    if name == STACK and stack_state:
        inputs = ", ".join(f"`{i}` ({w:+.2f})" for i, w in zip(stack_state["inputs"], stack_state["weights"]))
        return ("a stack: one logistic layer, fitted on the validation rows, over " + inputs + " (member logits, "
                "the per-crystal descriptor trees' probability); its inputs were added one at a time while the "
                "out-of-fold validation score rose, and its validation metrics are out of fold "
                f"({STACK_FOLDS} folds grouped by formula); formula-only rows get `{stack_state['composition_member']}`"
                " alone")
    if name == PER_CRYSTAL_TREES and trees:
        tried = "; ".join(f"{_tree_words(t['settings'])}: {t['validation_score']:.4f}" for t in trees["tried"])
        recipe = trees["recipe"]
        expected = ", ".join(d.replace("_", " ") for d in recipe["expected"])
        return (f"gradient-boosted trees ({_tree_words(trees['settings'])}) on the crystal's own descriptors "
                f"({', '.join(recipe['descriptors'])}) and, for {expected}, the log-ratio to what trees on "
                f"the composition expect (fitted on training rows of other formulas), with {DECOY_WORDS.format(recipe['decoys'])} "
                f"as extra negatives; they ship only inside the stack. {ABOVE_HULL_WORDS.format(recipe.get('energy'))} Their "
                "settings were chosen by the stack's out-of-fold validation score (the mean of its three AUCs) "
                f"under each: {tried}")
    if name == "voxel_cnn" and voxel:
        cap = "" if voxel["finished"] else ", stopped by its time cap (resumable)"
        return (f"voxel CNN on the training structures with random rotations, lr {voxel['lr']:g}: "
                f"{voxel['epochs_run']} of {voxel['epochs_planned']} epochs{cap}, best validation loss at epoch "
                f"{voxel['best_epoch']}; scored over {voxel['ensemble']} rotations per crystal"
                + (f". Training warned: {voxel['warning']}" if voxel.get("warning") else ""))
    return name


ABOVE_HULL_WORDS = ("`chgnet_above_hull` is the crystal's static energy per atom from the pretrained {} potential, "
                    "above the convex hull of the lowest such energy of each formula of the table (every split, "
                    "labels unused, as the Materials Project's own energy above the hull uses every crystal it "
                    "holds), with simple lattices (their best of a scan of sizes) for elements that have no "
                    "crystal of their own there.")


def _tree_words(settings: dict) -> str:
    shape = (f"{settings['max_leaf_nodes']} leaves" if "max_leaf_nodes" in settings
             else f"depth {settings['max_depth']}")
    return f"up to {settings['max_iter']} trees of {shape}, learning rate {settings['learning_rate']:g}"


def run_candidates(bench: Benchmark) -> dict[str, Path]:
    """Train (or reuse) every candidate, the voxel CNN first, the per-crystal trees last; returns the
    model files of those that have one (the names trained in this run go to ``bench.trained``)."""
    files = {}
    if bench.config.voxel_epochs:
        files["voxel_cnn"] = run_voxel(bench)
    elif bench.has("voxel_cnn"):
        files["voxel_cnn"] = bench.work / "runs" / "voxel_cnn" / "model.pt"
    for name in bench.config.candidates:
        run = bench.work / "runs" / name
        if not bench.has(name):
            train_candidate(bench, name)
        files[name] = run / "model.pt"
    trees = tree_state(bench)  # the trees have no file: they ship inside the stack
    if not bench.has(PER_CRYSTAL_TREES) or trees is None or trees.get("recipe") != tree_recipe(bench.config):
        t0 = time.perf_counter()
        bench.store(PER_CRYSTAL_TREES, choose_tree_settings(bench).probability, time.perf_counter() - t0)
        bench.trained.add(PER_CRYSTAL_TREES)
    return files


def train_candidate(bench: Benchmark, name: str):
    """Train one graph candidate and store its scores; its model file, loaded."""
    spec = CANDIDATES[name]
    t0 = time.perf_counter()
    loaded = bench.fit_graph(name, spec.family, weighted=spec.balanced, compositions=spec.compositions,
                             energy=spec.energy)
    bench.store(name, bench.model_scores(loaded), time.perf_counter() - t0)
    bench.trained.add(name)
    return loaded


def run_voxel(bench: Benchmark) -> Path:
    """The voxel CNN on the full train split, trained within its time cap (resumable) and scored at
    the epoch it has reached, so that its row is reported whatever it reaches; a later run that
    trains it further scores it again."""
    from cosynth.models.registry import load_model
    from cosynth.training.voxel import TrainConfig, train_voxel

    c = bench.config
    run = bench.work / "runs" / "voxel_cnn"
    reused = voxel_state(bench)
    if (bench.has("voxel_cnn") and reused and reused["finished"] and not (run / "checkpoints").exists()
            and (reused["epochs_planned"], reused["lr"], reused["ensemble"]) == (c.voxel_epochs, c.voxel_lr,
                                                                                 c.voxel_ensemble)):
        return run / "model.pt"  # scored in the report this run reuses; its model is the installed one
    t0 = time.perf_counter()
    metrics = train_voxel(bench.frame[["id", "cif", LABEL, "split"]], run, TrainConfig(
        label=LABEL, epochs=c.voxel_epochs, seed=c.seed, lr=c.voxel_lr, id_column="id", structure_column="cif",
        split_column="split", max_minutes=c.voxel_max_minutes), progress=False)
    state = {"epochs_planned": c.voxel_epochs, **{k: metrics[k] for k in ("epochs_run", "best_epoch", "finished")},
             "lr": c.voxel_lr, "ensemble": c.voxel_ensemble, "warning": metrics.get("warning")}
    if not bench.has("voxel_cnn") or voxel_state(bench) != state:
        bench.store("voxel_cnn", bench.model_scores(load_model(run / "model.pt"), ensemble=c.voxel_ensemble),
                    time.perf_counter() - t0)
        atomic_write_json(bench.work / VOXEL_STATE, state)
    return run / "model.pt"


VOXEL_STATE = "voxel_scored.json"


def voxel_state(bench: Benchmark) -> dict | None:
    """How far the scored voxel CNN was trained (epochs run of planned, best epoch), if it was."""
    path = bench.work / VOXEL_STATE
    return json.loads(path.read_text()) if path.exists() else None


BASELINES = {
    "origin_only": "positive rate of the row's origin in the training split",
    "density_only": "mass density alone (sign fixed on training rows)",
    "descriptor_trees": "gradient-boosted trees on the audit's structure descriptors and their ratios to the median of "
                        "the row's formula in the table (fitted on training rows; the ratios see the other polymorphs "
                        "scored with it, so no single-crystal model can use them)",
    "roost_composition": "Roost on the composition only (structures' formulas + composition-only rows)",
    "e_above_hull": "energy above the convex hull, lower = more synthesizable (rows that have it)",
    "clscore_pucgcnn": "PU-CGCNN CLscore (rows that have it; LEAKY: trained on these labels)",
    "xiespp_published": "published XIE-SPP weights (density-biased mixed-source model), xiespp sampler",
}
LEAKY = ("clscore_pucgcnn",)


# a voxel likelihood is a mean over rotations, shipped as it is (its spread and per-rotation labels are on
# that scale), so it is judged as it ships
SHIPPED_UNCALIBRATED = ("voxel_cnn",)


def judge(bench: Benchmark, names: list[str]) -> dict[str, dict]:
    """Calibrate each score on validation (except those shipped uncalibrated) and judge it on the
    test rows it covers."""
    from cosynth.evaluate.benchmark import score_report, threshold_from_validation

    f = bench.frame
    y = f[LABEL].to_numpy(int)
    out = {}
    for name in names:
        s = bench.scores[name].to_numpy(float)
        val = (f["split"] == "val").to_numpy() & np.isfinite(s)
        test = (f["split"] == "test").to_numpy() & np.isfinite(s)
        if val.sum() < 10 or test.sum() < 10 or len(set(y[val])) < 2:
            continue
        calibrated = name not in SHIPPED_UNCALIBRATED
        a, b = platt(s[val], y[val]) if calibrated else (1.0, 0.0)
        prob = 1.0 / (1.0 + np.exp(-(a * s + b)))
        threshold = threshold_from_validation(y[val], prob[val])
        report = score_report(y[test], prob[test], f["origin"].to_numpy()[test], f["formula"].to_numpy()[test],
                              threshold=threshold, n_boot=bench.config.n_boot, seed=bench.config.seed)
        val_report = score_report(y[val], prob[val], f["origin"].to_numpy()[val], f["formula"].to_numpy()[val],
                                  threshold=threshold, n_boot=0, seed=bench.config.seed)
        report.update(calibration={"a": a, "b": b}, calibrated=calibrated, validation=val_report["metrics"],
                      coverage=float(test.sum() / (f["split"] == "test").sum()))
        out[name] = report
    return out


def selection_score(metrics: dict) -> float:
    """How the winner is chosen, on validation only: the mean of overall, within-origin and
    polymorph-pair ROC AUC (a model must rank well where shortcuts cannot help)."""
    return float(np.nanmean([metrics["roc_auc"], metrics["within_origin_auc"], metrics["polymorph_pair_auc"]]))


STACK = "stack"
STACK_FOLDS = 5
STACK_STATE = "stack.json"


def stack_state(bench: Benchmark) -> dict | None:
    """The inputs and weights of the stack this work folder scored, if it did."""
    path = bench.work / STACK_STATE
    return json.loads(path.read_text()) if path.exists() else None


def _layer(X: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000).fit(X, y)


def out_of_fold(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each validation row's layer logit from a layer fitted on the other folds (grouped by formula),
    so that the stack is judged on validation rows it was not fitted on."""
    from sklearn.model_selection import GroupKFold

    out = np.zeros(len(y))
    for fit_rows, held in GroupKFold(min(STACK_FOLDS, len(set(groups)))).split(X, y, groups):
        if len(set(y[fit_rows])) == 2:  # a tiny quick-run fold may lack a class: it stays at 0
            out[held] = _layer(X[fit_rows], y[fit_rows]).decision_function(X[held])
    return out


def stack_pool(bench: Benchmark) -> list[str]:
    """What the stack may take: the graph candidates and the per-crystal trees that have scores."""
    return [c for c in (*bench.config.candidates, PER_CRYSTAL_TREES) if bench.has(c)]


def choose_stack_inputs(bench: Benchmark, pool: list[str]) -> tuple[list[str], float]:
    """Forward selection on validation: add the input that raises the out-of-fold selection score most,
    while it rises; (the inputs, their score)."""
    from cosynth.evaluate.benchmark import score_report

    f = bench.frame
    val = (f["split"] == "val").to_numpy()
    y, groups = f[LABEL].to_numpy(int)[val], f["formula"].to_numpy()[val]

    def score(inputs):
        X = np.column_stack([bench.scores[i].to_numpy(float)[val] for i in inputs])
        p = 1.0 / (1.0 + np.exp(-out_of_fold(X, y, groups)))
        metrics = score_report(y, p, f["origin"].to_numpy()[val], groups, threshold=0.5, n_boot=0)["metrics"]
        return selection_score(metrics)

    chosen, best = [], -np.inf
    while len(chosen) < len(pool):
        value, name = max((score([*chosen, c]), c) for c in pool if c not in chosen)
        if value <= best:
            break
        chosen.append(name)
        best = value
    return chosen, float(best)


def tree_probability(bench: Benchmark, described: pd.DataFrame, formulas) -> np.ndarray:
    """The per-crystal trees' probability for crystals outside the table (decoys), as the shipped
    stack computes it for a new crystal."""
    from cosynth.models.stack import classifier_features

    fitted = per_crystal_trees(bench)
    features = classifier_features(described, list(formulas), per_crystal_descriptor_names(), fitted.elements,
                                   {d: fitted.expecting[d].predict for d in EXPECTED})
    return fitted.classifier.predict_proba(features)[:, 1]


def decoy_frame(bench: Benchmark, made: pd.DataFrame) -> pd.DataFrame:
    """Decoys as rows to predict: an id of their own, their original's formula, their CIF."""
    formulas = bench.frame["formula"].to_numpy()[made["source"].to_numpy(int)]
    return pd.DataFrame({"id": [f"decoy-{k}" for k in range(len(made))], "formula": formulas, "cif": made["cif"]})


# models that read only a crystal's composition (or its origin): a decoy, made from its original's
# composition and origin, gets its original's score by construction
SAME_AS_ORIGINAL = ("origin_only", "roost_composition")


def score_decoys(bench: Benchmark, files: dict, installed: list[Path], xiespp_weights: Path | None) -> pd.DataFrame:
    """Every model that can score a made-up crystal, on the decoys of test positives (:func:`decoys`):
    one column per model, on its own scale (kept in the work folder; a model rescored by this run is
    scored again). A model without a file (its score reused, its run gone) and the scores a made-up
    crystal cannot have (an energy above the hull, the CLscore, ratios to the table's other polymorphs)
    are left out."""
    from cosynth.models.registry import published_xiespp

    c = bench.config
    made = decoys(bench, "test", c.test_decoys)
    source = made["source"].to_numpy(int)
    path = bench.work / f"decoy_scores_test_{c.test_decoys}.parquet"
    kept = pd.read_parquet(path) if path.exists() else made[["source", "kind"]].copy()
    kept = kept.drop(columns=[name for name in kept.columns if name in bench.stored])
    frame = decoy_frame(bench, made)

    def score(name):
        if name in SAME_AS_ORIGINAL:
            return bench.scores[name].to_numpy(float)[source]
        if name == "density_only":
            return density_sign(bench.frame, bench.descriptors()["density"].to_numpy(float)) * made["density"].to_numpy(float)
        if name == PER_CRYSTAL_TREES:
            return tree_probability(bench, made, frame["formula"])
        if name == "xiespp_published":
            if xiespp_weights is None or not Path(xiespp_weights).exists():
                return None
            return logits_of(published_xiespp(xiespp_weights), frame, ensemble=c.xiespp_ensemble, seed=c.seed,
                             progress=bench.progress)
        loaded = candidate_model(bench, name, files, installed)
        if loaded is None:
            return None
        return logits_of(loaded, frame, ensemble=c.voxel_ensemble if name == "voxel_cnn" else 1, seed=c.seed,
                         progress=bench.progress)

    for name in (*SAME_AS_ORIGINAL, "density_only", "xiespp_published", *files, PER_CRYSTAL_TREES):
        if name in kept.columns or not bench.has(name):
            continue
        values = score(name)
        if values is not None:
            kept[name] = values
            write_table(kept, path)
    return kept


def judge_decoys(bench: Benchmark, decoy_scores: pd.DataFrame) -> dict[str, dict]:
    """For each model: the share of decoys of test positives that it scores below the crystal they
    were made from (ties count half), for each kind of decoy and for all of them."""
    source, kinds = decoy_scores["source"].to_numpy(int), decoy_scores["kind"].to_numpy()
    out = {}
    for name in decoy_scores.columns.drop(["source", "kind"]):
        mine, theirs = decoy_scores[name].to_numpy(float), bench.scores[name].to_numpy(float)[source]
        ok = np.isfinite(mine) & np.isfinite(theirs)
        below = np.where(mine < theirs, 1.0, np.where(mine == theirs, 0.5, 0.0))
        out[name] = {kind: float(below[ok & (kinds == kind)].mean()) if (ok & (kinds == kind)).any() else None
                     for kind in DECOY_KINDS}
        out[name].update(all=float(below[ok].mean()) if ok.any() else None, n=int(ok.sum()))
    return out


def candidate_model(bench: Benchmark, name: str, files: dict, installed: list[Path]):
    """A candidate's model: its run's, or one an earlier install made from it on this split (alone, or
    as a member of an installed stack); None when there is none."""
    from cosynth.data.synth_benchmark import split_fingerprint
    from cosynth.models.registry import load_model

    run = files.get(name, bench.work / "runs" / name / "model.pt")
    if run.exists():
        return load_model(run)
    tag, split = f"cosynth benchmark synth ({name})", split_fingerprint(bench.frame)
    for path in installed:
        try:
            loaded = load_model(path) if path.exists() else None
        except Exception:  # noqa: BLE001 - a file this version cannot read (an older format) is no candidate
            loaded = None
        if loaded is None or loaded.metrics.get("benchmark_split") != split:
            continue
        if loaded.meta.get("provenance", {}).get("benchmark") == tag:
            return loaded
        if loaded.family == STACK and any(m.get("provenance") == tag for m in loaded.meta["config"]["members"]):
            return loaded.network.member(name)
    return None


def add_stack(bench: Benchmark, files: dict, installed: list[Path]) -> list[str]:
    """Fit, save and score the stack (unless the one scored before still stands); returns the names
    it scored or rescored (members retrained because no model file of theirs was left, and the stack)."""
    from sklearn.metrics import roc_auc_score

    from cosynth.data.synth_benchmark import split_fingerprint
    from cosynth.models.registry import FAMILIES, load_model, save_model
    from cosynth.models.stack import CLASSIFIER, EXPECTED_PREFIX, TREES, Stack, forest_from_sklearn, join_forests

    pool = stack_pool(bench)
    run = bench.work / "runs" / STACK / "model.pt"
    files[STACK] = run
    state = stack_state(bench)
    if bench.has(STACK) and state and state["pool"] == pool and not bench.trained:
        return []
    inputs, _ = choose_stack_inputs(bench, pool)
    members = [i for i in inputs if i != PER_CRYSTAL_TREES]
    if not members:
        return []
    t0 = time.perf_counter()
    loaded, rescored = {}, []
    for name in members:
        loaded[name] = candidate_model(bench, name, files, installed)
        if loaded[name] is None:  # its score was reused, its model file is gone: train it again (seeded)
            loaded[name] = train_candidate(bench, name)
            rescored.append(name)
    f = bench.frame
    val = (f["split"] == "val").to_numpy()
    y = f[LABEL].to_numpy(int)
    X = np.column_stack([bench.scores[i].to_numpy(float) for i in inputs])
    layer = _layer(X[val], y[val])
    readers = [m for m in members if FAMILIES[loaded[m].family][2] != "structure"]  # those that read formulas
    # formula-only rows get the reader that ranks validation best
    composition = max(readers, key=lambda m: roc_auc_score(y[val], bench.scores[m].to_numpy(float)[val]), default=None)
    tree_args, arrays = {}, {}
    if PER_CRYSTAL_TREES in inputs:
        fitted = per_crystal_trees(bench)
        forests, arrays = join_forests({CLASSIFIER: forest_from_sklearn(fitted.classifier),
                                        **{EXPECTED_PREFIX + d: forest_from_sklearn(m) for d, m in fitted.expecting.items()}})
        tree_args = {"descriptors": per_crystal_descriptor_names(), "expected": list(EXPECTED),
                     "elements": fitted.elements, "n_nodes": len(arrays["feature"]), "forests": forests,
                     "hull": bench.hull().lowest}
    network = Stack(
        members=[{"name": m, "family": loaded[m].family, "config": loaded[m].network.config,
                  "target_scale": loaded[m].target_scale, "provenance": f"cosynth benchmark synth ({m})"}
                 for m in members],
        inputs=[TREES if i == PER_CRYSTAL_TREES else i for i in inputs], weights=layer.coef_[0].tolist(),
        bias=float(layer.intercept_[0]), **tree_args,
        composition_member=composition, composition_calibration=None if composition is None else dict(zip(
            ("a", "b"), platt(bench.scores[composition].to_numpy(float)[val], y[val]))))
    for name, member in loaded.items():
        network.members[name].load_state_dict(member.network.state_dict())
    network.set_trees(arrays)
    save_model(network, run, {"task": "classification", "inputs": "structure" if composition is None else "either",
                              "provenance": {"source": f"stack of {', '.join(inputs)} on split "
                                                       f"{split_fingerprint(f)}"}})
    scores = bench.model_scores(load_model(run), splits=("test",))
    scores[val] = out_of_fold(X[val], y[val], f["formula"].to_numpy()[val])
    bench.store(STACK, scores, time.perf_counter() - t0)
    atomic_write_json(bench.work / STACK_STATE, {"pool": pool, "inputs": inputs, "weights": layer.coef_[0].tolist(),
                                                 "bias": float(layer.intercept_[0]), "composition_member": composition,
                                                 "retrained_members": rescored})
    return [*rescored, STACK]


def benchmark_synth(out, *, work=None, data_root=None, config: BenchmarkConfig | None = None,
                    xiespp_weights=None, install: bool | Path = False, reuse_scores: bool = False,
                    progress: bool = False) -> dict:
    """Run (or resume) the synthesizability benchmark and write its report to ``out``.

    Args:
        out: the report folder (README.md, benchmark.json, figures/).
        work: the work folder (table, runs, scores); default ``runs/synth-benchmark[-quick]``.
        data_root: the shared data root.
        config: the settings (:meth:`BenchmarkConfig.quick_run` for a smoke test).
        xiespp_weights: the published XIE-SPP weights (``weights0500.h5``) for their baseline row.
        install: export the winner (and the voxel model, when trained) into ``cosynth/pretrained``,
            or into the folder given.
        reuse_scores: start a new work folder from the scores ``out`` kept from an earlier run with the
            same split and settings, so that only candidates new since then train.
        progress: progress bars.

    Returns:
        The report's JSON.
    """
    config = config or BenchmarkConfig()
    t_start = time.perf_counter()
    work = Path(work or ("runs/synth-benchmark-quick" if config.quick else "runs/synth-benchmark"))
    bench = Benchmark(work, config, data_root=data_root, progress=progress)
    if reuse_scores and (reused := reuse_report_scores(bench, Path(out))):
        print(f"reusing {len(reused)} scores kept in {out}: {', '.join(reused)}")
    run_baselines(bench, xiespp_weights=xiespp_weights)
    files = run_candidates(bench)
    installed = installed_model_files(install)
    add_stack(bench, files, installed)
    candidates = [c for c in [*files, PER_CRYSTAL_TREES] if bench.has(c)]
    judged = judge(bench, [*BASELINES, *candidates])
    judged_candidates = [c for c in candidates if c in judged and c in files]  # those that ship alone
    winner = max(judged_candidates, key=lambda c: selection_score(judged[c]["validation"])) if judged_candidates else None
    decoy_report = judge_decoys(bench, score_decoys(bench, files, installed, xiespp_weights))
    result = _result(bench, judged, candidates, winner, time.perf_counter() - t_start)
    result["winner_on_baseline_rows"] = on_baseline_rows(bench, judged, winner)
    result["decoys"] = decoy_report
    from cosynth.experiments.synth_benchmark_report import write_report

    write_report(Path(out), bench, result)
    if install and winner is not None:
        folder = None if install is True else Path(install)
        result["installed"] = install_models(bench, judged, winner, files, result, folder, installed)
        atomic_write_json(Path(out) / "benchmark.json", result)
    return result


def on_baseline_rows(bench: Benchmark, judged: dict, winner: str | None) -> dict[str, dict]:
    """The winner judged on only the test rows of each non-leaky baseline that lacks some (energy
    above the hull exists for half of them), so that it is compared with that baseline on the same rows."""
    from cosynth.evaluate.benchmark import score_report
    from cosynth.experiments.synth_benchmark_report import FULL_COVERAGE

    if winner is None:
        return {}
    f, mine = bench.frame, judged[winner]
    y, test = f[LABEL].to_numpy(int), (f["split"] == "test").to_numpy()
    a, b = mine["calibration"]["a"], mine["calibration"]["b"]
    prob = 1.0 / (1.0 + np.exp(-(a * bench.scores[winner].to_numpy(float) + b)))
    out = {}
    for name, report in judged.items():
        if name not in BASELINES or name in LEAKY or report["coverage"] >= FULL_COVERAGE:
            continue
        rows = test & np.isfinite(bench.scores[name].to_numpy(float)) & np.isfinite(prob)
        out[name] = score_report(y[rows], prob[rows], f["origin"].to_numpy()[rows], f["formula"].to_numpy()[rows],
                                 threshold=mine["threshold"], n_boot=bench.config.n_boot, seed=bench.config.seed)
    return out


def _result(bench: Benchmark, judged: dict, candidates: list[str], winner: str | None, seconds: float) -> dict:
    from cosynth.data.synth_benchmark import leakage_checks, split_fingerprint

    f = bench.frame
    saved = bench.work / "seconds.json"
    stage_seconds = json.loads(saved.read_text()) if saved.exists() else {}
    return {"config": asdict(bench.config), "split_fingerprint": split_fingerprint(f), "leakage": leakage_checks(f),
            "rows": {s: int((f["split"] == s).sum()) for s in SPLITS},
            "positives": {s: int(f.loc[f["split"] == s, LABEL].sum()) for s in SPLITS},
            "label_sources": f["label_source"].value_counts().to_dict(),
            "baselines": {k: v for k, v in BASELINES.items() if k in judged}, "leaky": list(LEAKY),
            "candidates": candidates, "winner": winner, "scores": judged, "voxel": voxel_state(bench),
            "candidate_words": {c: candidate_words(c, voxel_state(bench), bench.config, stack_state(bench),
                                                    tree_state(bench))
                                for c in candidates},
            "stack": stack_state(bench), "trees": tree_state(bench),
            "seconds": {k: v for k, v in stage_seconds.items() if k in judged},  # the models this report shows
            "wall_seconds_this_command": round(seconds, 1)}


def installed_model_files(install: bool | Path) -> list[Path]:
    """The model files an earlier install may have left: in the install folder and the bundled ones."""
    from cosynth.models.registry import PRETRAINED_DIR

    folders = [PRETRAINED_DIR] + ([Path(install)] if install not in (True, False, None) else [])
    return sorted({p for folder in folders for p in Path(folder).glob("*.pt")})


def install_models(bench: Benchmark, judged: dict, winner: str, files: dict, result: dict,
                   folder: Path | None = None, installed: list[Path] = ()) -> dict:
    """Export the winner (with its validation calibration) as the default model, and the voxel model.

    Args:
        bench, judged, winner, files, result: the benchmark run, its judged scores, the chosen
            candidate, the candidates' model files and the report's JSON.
        folder: where to write ``<name>.pt`` and ``<name>.md`` (default: the bundled models' folder).
        installed: model files an earlier install left (:func:`installed_model_files`), where a
            candidate whose score was reused is found.

    Returns:
        Exported name → candidate.
    """
    from cosynth.experiments.synth_benchmark_report import model_card
    from cosynth.models.registry import PRETRAINED_DIR, save_model

    folder = Path(folder or PRETRAINED_DIR)

    exported = {}
    targets = {"cosynth-synth": winner}
    if "voxel_cnn" in files and "voxel_cnn" in judged:
        targets["cosynth-synth-voxel"] = "voxel_cnn"
    for name, candidate in targets.items():
        loaded = candidate_model(bench, candidate, files, installed)
        if loaded is None:
            raise FileNotFoundError(f"no model file for {candidate}: its run has none and no installed model came "
                                    "from it; rerun without --reuse-scores to train it")
        report = judged[candidate]
        meta = {**loaded.meta, "calibration": report["calibration"], "threshold": report["threshold"],
                "metrics": {**report["metrics"], "benchmark_split": result["split_fingerprint"]},
                "provenance": {**loaded.meta.get("provenance", {}), "benchmark": f"cosynth benchmark synth ({candidate})"}}
        if not report["calibrated"]:
            meta.pop("calibration")
        save_model(loaded.network, folder / f"{name}.pt", meta)
        atomic_write_text(folder / f"{name}.md", model_card(name, candidate, result))
        exported[name] = candidate
    return exported


def quick_config(**overrides) -> BenchmarkConfig:
    return replace(BenchmarkConfig.quick_run(), **overrides)
