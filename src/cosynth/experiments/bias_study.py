"""The data-bias study end to end (Davariashtiyani et al. 2024; ``../shared/specs/bias-study.md``).

One voxel CNN architecture, three training sets:

* **mixed**: experimental positives vs CSPD-like generated negatives (covalent-radius volumes);
* **single**: Materials Project ICSD-tagged vs theoretical polymorphs of the same formulas;
* **mixed-volnorm** (the arm the paper did not have): the mixed set with every generated
  negative rescaled to the volume of a known structure of its formula (cosynth's mitigation).

Stages, each resumable from what the previous run left in the work folder: build both datasets,
audit them (Fig. 2), apply the mitigation, train (Fig. 3a–b; learning curves), evaluate every
model on every test set (own test = Fig. 3c–f, swapped = Fig. 4), compress the single-source test
set (Fig. 4; a sweep of volume factors), the ensemble-size study (Table I), and one report
(HTML + Markdown + JSON) with the paper's numbers beside ours. Wall time per stage goes into the
report. Heavy artefacts (tables, models, prediction caches) stay in the work folder; the report
folder holds only what is meant to be read and committed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.config import data_root as config_data_root

ARMS = ("mixed", "single", "mixed-volnorm")
ARM_TABLES = {"mixed": "mixed_source", "single": "single_source", "mixed-volnorm": "mixed_source_volnorm"}
ARM_TITLES = {"mixed": "mixed-source", "single": "single-source", "mixed-volnorm": "mixed-source, volume-normalised"}
TEST_TABLES = {"mixed test": "mixed_source", "single test": "single_source",
               "mixed-volnorm test": "mixed_source_volnorm"}
METRICS = ("roc_auc", "accuracy", "precision", "recall", "specificity")
LABEL = "label"

# The paper's results (spec tables): (model, test) -> metrics; None where the paper gives none.
PAPER_RESULTS = [
    {"experiment": "own test set", "model": "mixed", "test": "mixed test", "factor": 1.0,
     "roc_auc": 0.995, "accuracy": 0.967, "precision": 0.990, "recall": 0.971, "specificity": 0.95},
    {"experiment": "own test set", "model": "single", "test": "single test", "factor": 1.0,
     "roc_auc": 0.862, "accuracy": 0.778, "precision": 0.749, "recall": 0.859, "specificity": 0.69},
    {"experiment": "swapped test set", "model": "mixed", "test": "single test", "factor": 1.0,
     "roc_auc": None, "accuracy": 0.51, "precision": 0.51, "recall": 0.94, "specificity": 0.04},
    {"experiment": "swapped test set", "model": "single", "test": "mixed test", "factor": 1.0,
     "roc_auc": None, "accuracy": 0.63, "precision": 0.81, "recall": 0.73, "specificity": 0.15},
    {"experiment": "compression (volume −55 %)", "model": "mixed", "test": "single test", "factor": 0.45,
     "roc_auc": None, "accuracy": 0.56, "precision": 0.61, "recall": 0.43, "specificity": 0.7},
    {"experiment": "compression (volume −55 %)", "model": "single", "test": "single test", "factor": 0.45,
     "roc_auc": None, "accuracy": 0.61, "precision": 0.58, "recall": 0.94, "specificity": 0.23},
]
PAPER_ENSEMBLE = {"E": [1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200],
                  "inconsistent": [123, 79, 45, 39, 33, 27, 18, 17, 12, 11, 9],
                  "consistent_pct": [56.4, 72.0, 84.0, 86.2, 88.3, 90.4, 93.6, 94.0, 95.7, 96.1, 96.8],
                  "crystals": 288}
PAPER_SETUP = {"mixed": {"positives": 2960, "negatives": 597, "source": "COD experimental CIFs vs CSPD hypotheticals "
                         "for the 108 most-studied compositions"},
               "single": {"positives": 1068, "negatives": 930, "source": "MP v2022.10.28 ICSD-tagged vs theoretical "
                          "entries of the same compositions"},
               "epochs": 500, "ensemble": 100, "split": "60/20/20"}


@dataclass
class StudyConfig:
    """Everything that decides the study's numbers (stored in the report)."""

    seed: int = 0
    # Epochs per arm: the mixed sets learn their shortcut early; the single-source set needs the most.
    epochs: dict = field(default_factory=lambda: {"mixed": 40, "single": 100, "mixed-volnorm": 40})
    # Adam learning rate per arm: 1e-3 kills the convolutions of the arms without a density
    # shortcut within an epoch, 1e-4 keeps them alive (measurements: reports/bias-study/RUN_NOTES.md).
    lr: dict = field(default_factory=lambda: {"mixed": 1e-3, "single": 1e-4, "mixed-volnorm": 1e-4})
    batch_size: int = 16
    max_train_minutes: float | None = None  # per model and run; a later run resumes
    ensemble: int = 20  # rotations per prediction in every evaluation
    volume_factors: tuple[float, ...] = (0.45, 1.0)  # `cosynth stress volume` sweeps more factors
    ensemble_sizes: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 50)
    ensemble_pool: int = 64
    ensemble_repeats: int = 10
    mixed_formulas: int = 108
    quick_rows_per_cell: int | None = None  # quick mode: rows kept per (split, label)
    workers: int = 1

    @classmethod
    def quick(cls) -> "StudyConfig":
        """Tiny subsets and few epochs: checks that every stage runs, not the science."""
        return cls(epochs={arm: 2 for arm in ARMS}, ensemble=2, volume_factors=(0.45, 1.0), ensemble_sizes=(1, 2, 4), ensemble_pool=4,
                   ensemble_repeats=3, mixed_formulas=6, quick_rows_per_cell=3)

    @property
    def is_quick(self) -> bool:
        return self.quick_rows_per_cell is not None


@dataclass
class Stages:
    """Wall time per stage, kept in ``work/stages.json`` across runs (a resumed run adds to it)."""

    path: Path
    seconds: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Stages":
        return cls(path, json.loads(path.read_text()) if path.exists() else {})

    def run(self, name: str, fn):
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        # re-read before adding: stages may run in several processes at once (e.g. one model's
        # evaluation while another still trains); each adds its own time to what is on disk
        if self.path.exists():
            self.seconds = json.loads(self.path.read_text())
        entry = self.seconds.setdefault(name, {"seconds": 0.0, "runs": 0})
        entry["seconds"] = round(entry["seconds"] + elapsed, 2)
        entry["runs"] += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.seconds, indent=2))
        tmp.replace(self.path)
        return result


# ---- stages -----------------------------------------------------------------------------------
def build_datasets(data_root: Path, work: Path, config: StudyConfig) -> dict[str, Path]:
    """Both datasets (and their cards) under ``work/data``; existing tables are reused.

    In quick mode each table is cut to at most ``quick_rows_per_cell`` rows per (split, label), and the
    mixed set is built without the card's scaling comparison.

    Args:
        data_root: the shared data folder.
        work: the study's work folder.
        config: the study settings (seed, number of mixed-source formulas, quick mode).

    Returns:
        {"single_source", "mixed_source"} → table paths.
    """
    from cosynth.data.builders import build_mixed_source, build_single_source

    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"single_source": out / "single_source.parquet", "mixed_source": out / "mixed_source.parquet"}
    if not paths["single_source"].exists():
        if config.is_quick:
            _quick_subset(build_single_source(data_root, None, seed=config.seed), config).write(paths["single_source"])
        else:
            build_single_source(data_root, paths["single_source"], seed=config.seed)
    if not paths["mixed_source"].exists():
        if config.is_quick:
            table = build_mixed_source(data_root, None, n_formulas=config.mixed_formulas, seed=config.seed,
                                       compare_scalings=False)
            _quick_subset(table, config).write(paths["mixed_source"])
        else:
            build_mixed_source(data_root, paths["mixed_source"], n_formulas=config.mixed_formulas, seed=config.seed)
    return paths


def _quick_subset(table, config: StudyConfig):
    """At most ``quick_rows_per_cell`` rows per (split, label), chosen by seed."""
    frame = table.frame
    keep = (frame.groupby(["split", LABEL], group_keys=False)
            .apply(lambda g: g.sample(min(len(g), config.quick_rows_per_cell), random_state=config.seed)))
    return table.subset(frame.index.isin(keep.index))


def mitigate(paths: dict[str, Path], config: StudyConfig) -> Path:
    """The mixed set with every generated negative rescaled to a known structure's volume."""
    from cosynth.audit.mitigation import mitigate_table
    from cosynth.data.table import read_table

    out = paths["mixed_source"].with_name("mixed_source_volnorm.parquet")
    if not out.exists():
        table, summary = mitigate_table(read_table(paths["mixed_source"]), LABEL, "normalize-volume", seed=config.seed)
        table.write(out)
        (out.with_suffix(".json")).write_text(json.dumps(summary, indent=2, default=str))
    return out


def audit_all(paths: dict[str, Path], report: Path, work: Path) -> dict:
    """Fig. 2 analogue: class and source distributions of every descriptor, with verdicts.

    Audits the single-source set (by ``structure_source``), the mixed set and its volume-normalised copy
    (by ``source``).

    Args:
        paths: dataset name → table path (with ``mixed_source_volnorm``).
        report: the report folder; each audit is written to ``report/audit/<name>``.
        work: the work folder; descriptors are cached in ``work/descriptors``.

    Returns:
        Dataset name → :func:`audit_table` result.
    """
    from cosynth.audit.audit import audit_table

    results = {}
    for name, source in (("single_source", "structure_source"), ("mixed_source", "source"),
                         ("mixed_source_volnorm", "source")):
        results[name] = audit_table(paths[name], LABEL, source=source, out_dir=report / "audit" / name,
                                    cache_dir=work / "descriptors", title=f"Audit: {name.replace('_', '-')}")
    return results


def train_arm(arm: str, table: Path, work: Path, config: StudyConfig) -> Path:
    """Train (or resume, or reuse) one arm's model.

    A run counts as done when its model was exported after its last checkpoint and it has all its epochs
    (or, under a time cap, whenever it was exported).

    Args:
        arm: the arm's name (a key of the config's ``epochs`` and ``lr``).
        table: the arm's training table.
        work: the work folder; the run goes to ``work/models/<arm>``.
        config: the study settings.

    Returns:
        The run folder.

    Raises:
        ValueError: an existing run was trained at another learning rate.
    """
    from cosynth.training.voxel import TrainConfig, train_voxel

    run = work / "models" / arm
    _check_same_lr(run, config.lr[arm])
    if not _finished(run, config.epochs[arm], config.max_train_minutes is not None):
        train_voxel(table, run, TrainConfig(
            label=LABEL, epochs=config.epochs[arm], seed=config.seed, batch_size=config.batch_size, lr=config.lr[arm],
            sampler="haar", id_column="id", structure_column="cif", split_column="split",
            test_ensemble=config.ensemble, max_minutes=config.max_train_minutes), progress=False)
    return run


def _check_same_lr(run: Path, lr: float) -> None:
    """Resuming or reusing a model trained at another learning rate would mix two experiments."""
    saved = run / "config.json"
    if saved.exists():
        trained = json.loads(saved.read_text()).get("lr")
        if trained is not None and not np.isclose(trained, lr):
            raise ValueError(f"{run} was trained with lr {trained:g}, not the {lr:g} asked for: "
                             f"move that folder aside to retrain, or pass --lr {run.name}={trained:g}")


def _finished(run: Path, epochs: int, time_capped: bool) -> bool:
    """A run is finished when its model was exported after its last checkpoint and it has all its
    epochs (or, under a time cap, when it stopped on the cap; raise the cap to continue it)."""
    model, last, hist = run / "model.pt", run / "checkpoints" / "last.ckpt", run / "history.csv"
    if not (model.exists() and last.exists() and hist.exists()) or model.stat().st_mtime < last.stat().st_mtime:
        return False
    return time_capped or len(pd.read_csv(hist)) >= epochs


def test_tables(paths: dict[str, Path]) -> dict:
    from cosynth.data.table import read_table

    out = {}
    for name, key in TEST_TABLES.items():
        table = read_table(paths[key])
        out[name] = table.subset((table.frame["split"] == "test").to_numpy())
    return out


def cross_evaluation(runs: dict[str, Path], tests: dict, work: Path, config: StudyConfig) -> pd.DataFrame:
    """Every model on every test set (own and swapped), predictions cached in the work folder.

    Args:
        runs: arm → run folder (with ``model.pt``).
        tests: test set name → CrystalTable.
        work: the work folder (cache under ``work/predictions``).
        config: the study settings (ensemble, seed, workers).

    Returns:
        The :func:`cross_evaluate` frame.
    """
    from cosynth.evaluate.stress import cross_evaluate

    return cross_evaluate({arm: run / "model.pt" for arm, run in runs.items()}, tests, LABEL,
                          ensemble=config.ensemble, seed=config.seed, out_dir=work, workers=config.workers)


def own_evaluations(runs: dict[str, Path], tests: dict, work: Path, report: Path, config: StudyConfig) -> dict:
    """Fig. 3 per arm: ROC, metrics, likelihood histograms, learning curves (cached predictions).

    Args:
        runs: arm → run folder (with ``model.pt`` and ``history.csv``).
        tests: test set name → CrystalTable; each arm is evaluated on ``"<arm> test"``.
        work: the work folder (prediction cache).
        report: the report folder; each arm's page goes to ``report/evaluate/<arm>``.
        config: the study settings (ensemble, seed, workers).

    Returns:
        Arm → :func:`evaluate_scores` result with model, ensemble, seed and rows added.
    """
    from cosynth.evaluate.evaluate import evaluate_scores, write_evaluation
    from cosynth.evaluate.stress import table_predictions
    from cosynth.models.registry import load_model

    results = {}
    for arm, run in runs.items():
        tname = f"{arm} test"
        table = tests[tname]
        net = load_model(run / "model.pt")
        pred = table_predictions(arm, run / "model.pt", net, tname, table, ensemble=config.ensemble,
                                 seed=config.seed, cache=work / "predictions", workers=config.workers)
        pred[LABEL] = table.frame[LABEL].to_numpy()
        result = evaluate_scores(pred[LABEL], pred["likelihood"], task="classification")
        result.update(model=str(run / "model.pt"), ensemble=config.ensemble, seed=config.seed, rows=int(len(pred)))
        write_evaluation(result, pred, LABEL, report / "evaluate" / arm, history=pd.read_csv(run / "history.csv"),
                         title=f"Own test set: {ARM_TITLES[arm]} model")
        results[arm] = result
    return results


def compression(runs: dict[str, Path], tests: dict, work: Path, report: Path, config: StudyConfig):
    """Fig. 4 generalised: every model on the single-source test set at several volume factors.

    Args:
        runs: arm → run folder (with ``model.pt``).
        tests: test set name → CrystalTable (uses ``"single test"``).
        work: the work folder (prediction cache).
        report: the report folder; the sweep is written to ``report/compression``.
        config: the study settings (volume factors, ensemble, seed, workers).

    Returns:
        The :func:`volume_sweep` frame and densities.
    """
    from cosynth.evaluate.stress import volume_sweep, write_sweep

    df, densities = volume_sweep({arm: run / "model.pt" for arm, run in runs.items()}, tests["single test"], LABEL,
                                 factors=config.volume_factors, ensemble=config.ensemble, seed=config.seed,
                                 out_dir=work, workers=config.workers, table_name="single test")
    write_sweep(df, densities, report / "compression", title="Compression of the single-source test set")
    return df, densities


def ensemble_size(run: Path, tests: dict, report: Path, config: StudyConfig) -> dict:
    """Table I on the single-source model's test set (bootstrap from a pool of rotations).

    A result already in ``report/ensemble`` is reused when its pool size, repeats, sizes and the
    model/table fingerprint match.

    Args:
        run: the single-source run folder (with ``model.pt``).
        tests: test set name → CrystalTable (uses ``"single test"``; rows without a structure are left out).
        report: the report folder; the study is written to ``report/ensemble``.
        config: the study settings (ensemble sizes, repeats, pool size, seed).

    Returns:
        The :func:`ensemble_study` result with its ``fingerprint``.
    """
    from cosynth.evaluate.ensemble import ensemble_study, write_study
    from cosynth.evaluate.stress import cache_fingerprint
    from cosynth.models.registry import load_model

    out = report / "ensemble"
    cached = out / "ensemble_study.json"
    table = tests["single test"]
    fingerprint = cache_fingerprint(run / "model.pt", table)  # a retrained model or edited table reruns it
    if cached.exists():
        result = json.loads(cached.read_text())
        if result.get("pool_size") == config.ensemble_pool and result.get("repeats") == config.ensemble_repeats \
                and [r["E"] for r in result["rows"]] == list(config.ensemble_sizes) \
                and result.get("fingerprint") == fingerprint:
            return result
    keep = table.has_structure()
    structures = [s for s, k in zip(table.structures(), keep) if k]
    ids = table.frame["id"].astype(str)[keep].tolist()
    net = load_model(run / "model.pt").network
    result = ensemble_study(net, structures, ids, sizes=config.ensemble_sizes, repeats=config.ensemble_repeats,
                            seed=config.seed, mode="pool", pool_size=config.ensemble_pool)
    result["fingerprint"] = fingerprint
    write_study(result, out)
    return result


# ---- the whole study --------------------------------------------------------------------------
def reproduce(out: Path, *, work: Path | None = None, data_root: Path | None = None,
              config: StudyConfig | None = None) -> dict:
    """Run (or resume) every stage and write the report to ``out``.

    Args:
        out: the report folder.
        work: the work folder (default ``runs/bias-study``, or ``runs/bias-study-quick`` in quick mode).
        data_root: the shared data folder (default: the configured one).
        config: the study settings (default :class:`StudyConfig`).

    Returns:
        The report's JSON.

    Raises:
        FileNotFoundError: the shared data folder is missing.
    """
    config = config or StudyConfig()
    out, data_root = Path(out), config_data_root(data_root, must_exist=False)
    work = Path(work or ("runs/bias-study-quick" if config.is_quick else "runs/bias-study"))
    if not data_root.exists():
        raise FileNotFoundError(f"shared data folder {data_root} not found (pass --data)")
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages.load(work / "stages.json")
    (work / "config.json").parent.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(config), indent=2))

    paths = stages.run("build datasets", lambda: build_datasets(data_root, work, config))
    paths["mixed_source_volnorm"] = stages.run("mitigation (normalize-volume)", lambda: mitigate(paths, config))
    audits = stages.run("audit", lambda: audit_all(paths, out, work))
    runs = {arm: stages.run(f"train {arm}", lambda arm=arm: train_arm(arm, paths[ARM_TABLES[arm]], work, config))
            for arm in ARMS}
    tests = test_tables(paths)
    cross = stages.run("cross-evaluation", lambda: cross_evaluation(runs, tests, work, config))
    own = stages.run("own-test evaluation", lambda: own_evaluations(runs, tests, work, out, config))
    from cosynth.evaluate.stress import write_cross

    write_cross(cross, out / "cross", title="Swapped test sets: every model on every test set")
    sweep, densities = stages.run("compression", lambda: compression(runs, tests, work, out, config))
    ensemble = stages.run("ensemble-size study", lambda: ensemble_size(runs["single"], tests, out, config))
    from cosynth.experiments.bias_study_report import write_report

    return stages.run("report", lambda: write_report(out, work, config, paths, audits, runs, cross, own, sweep,
                                                     densities, ensemble, stages))


# ---- command-line settings ------------------------------------------------------------------
def _cli_config(quick: bool, **overrides) -> StudyConfig:
    config = StudyConfig.quick() if quick else StudyConfig()
    if overrides.get("epochs") is not None:
        overrides["epochs"] = parse_epochs(overrides["epochs"], config.epochs)
    if overrides.get("lr") is not None:
        overrides["lr"] = parse_per_arm(overrides["lr"], config.lr, _positive_float, "--lr")
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def parse_epochs(text, defaults: dict) -> dict:
    """``"50"`` (every arm) or ``"mixed=80,single=60"`` (the others keep their defaults)."""
    return parse_per_arm(text, defaults, _positive_int, "--epochs")


def parse_per_arm(text, defaults: dict, convert, option: str) -> dict:
    """One value for every arm (``"50"``) or some arms by name (``"mixed=80,single=60"``).

    Args:
        text: the option's text.
        defaults: arm → value, kept for arms not named.
        convert: ``convert(text, option)`` turns one value's text into the value.
        option: the option's name, for messages.

    Returns:
        Arm → value.

    Raises:
        ValueError: an unknown arm name (or what ``convert`` raises).
    """
    text = str(text).strip()
    if "=" not in text:
        return {arm: convert(text, option) for arm in ARMS}
    out = dict(defaults)
    for item in text.split(","):
        arm, _, value = item.partition("=")
        if arm.strip() not in ARMS:
            raise ValueError(f"unknown model {arm.strip()!r} in {option}; models: {', '.join(ARMS)}")
        out[arm.strip()] = convert(value, option)
    return out


def _positive_int(text: str, option: str = "--epochs") -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{option} needs whole numbers, not {text!r}") from None
    if value < 1:
        raise ValueError(f"{option} must be at least 1, not {value}")
    return value


def _positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option} needs numbers, not {text!r}") from None
    if not value > 0:
        raise ValueError(f"{option} must be positive, not {value:g}")
    return value
