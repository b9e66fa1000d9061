"""`cosynth predict` (any model family) and `cosynth demo`."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from cosynth.cli.common import check_output, fail, print_table, show
from cosynth.config import DEFAULT_MODEL

SAMPLERS = ("haar", "sobol", "xiespp")


def predict(
    inputs: Optional[List[str]] = typer.Argument(
        None, help="CIF/POSCAR/extxyz/JSON files, folders, globs or tables (csv/parquet/jsonl; a formula column "
                   "without structures is fine for composition models)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled model name or model file (any family)."),
    formula: Optional[str] = typer.Option(None, "--formula", "-f", help="Comma-separated formulas, e.g. SiO2,TiO2."),
    ensemble: int = typer.Option(100, "--ensemble", "-E", help="Random rotations per crystal (voxel models)."),
    seed: int = typer.Option(0, help="Seed of the rotations (results depend only on seed and crystal id)."),
    sampler: Optional[str] = typer.Option(None, help="haar (uniform on SO(3)), sobol (low-discrepancy) or xiespp; default: the model's."),
    rotations: Optional[Path] = typer.Option(None, help="CSV of explicit angle triples alpha,beta,gamma (degrees)."),
    per_rotation: Optional[Path] = typer.Option(None, "--per-rotation", help="Also write one row per crystal × rotation here."),
    threshold: Optional[float] = typer.Option(
        None, help="Label threshold on the likelihood and on each rotation (default: the model's, else 0.5)."),
    workers: int = typer.Option(1, help="Processes building images (no effect on results)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Crystals imaged ahead of the CNN (no effect on results)."),
    id_column: Optional[str] = typer.Option(None, help="Id column of input tables."),
    structure_column: Optional[str] = typer.Option(None, help="Structure (CIF text or path) column of input tables."),
    formula_column: Optional[str] = typer.Option(None, help="Formula column of input tables."),
    majority: bool = typer.Option(False, "--resolve-disorder-majority", help="Keep the majority species of disordered sites instead of rejecting the crystal."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Output table: .csv, .parquet or .json (JSON lines)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --output and predict only the rest."),
    precision: str = typer.Option("auto", help="Voxel CNN arithmetic: auto (bf16 where the hardware has native bf16 "
                                               "matrix units), fp32 or bf16."),
    shard: Optional[str] = typer.Option(
        None, help="i/N: predict only shard i (0-based) of N, chosen by crystal id (e.g. a Slurm array task); the "
                   "N shards together are one unsharded run."),
) -> None:
    """Predictions per crystal or formula with any cosynth model; the `modality` column says what each row used.

    Ctrl-C or SIGTERM writes the rows finished so far (atomically, marked partial in OUT.meta.json)
    and exits with status 130; `--resume` then continues. The exit status is 1 when no row could be
    predicted or an input path does not exist.
    """
    import pandas as pd

    from cosynth.io.files import atomic_write_json, read_table, write_table
    from cosynth.io.shards import parse_shard
    from cosynth.predict import predict as run_predict

    check_prediction_options(precision, sampler, threshold)
    if workers < 1 or batch_size < 1 or ensemble < 1:
        fail("--workers, --batch-size and --ensemble must be at least 1")
    try:
        shard_part = parse_shard(shard) if shard is not None else None
    except ValueError as err:
        fail(f"--shard: {err}")
    check_output(out)
    check_output(per_rotation, "--per-rotation")
    formulas = [f.strip() for f in formula.split(",") if f.strip()] if formula else None
    if not inputs and not formulas:
        fail("give INPUT files/folders/tables or --formula")
    if resume and out is None:
        fail("--resume needs --output (the table to continue)")
    previous = read_table(out, text_columns=("id",)) if resume and out.exists() else None
    with _sigterm_as_interrupt():
        try:
            result = run_predict(inputs or None, model, ensemble=ensemble, seed=seed, sampler=sampler,
                                 rotations=rotations, threshold=threshold, per_rotation=per_rotation is not None,
                                 workers=workers, batch_size=batch_size, progress=True, id_column=id_column,
                                 structure_column=structure_column, formula_column=formula_column, formulas=formulas,
                                 resolve_disorder="majority" if majority else "error",
                                 skip_ids=None if previous is None else previous["id"].astype(str).tolist(),
                                 precision=precision, shard=shard_part)
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
    crystals = result.crystals
    if previous is not None:
        typer.echo(f"resumed: {len(previous)} rows kept from {out}", err=True)
        crystals = pd.concat([previous, crystals], ignore_index=True) if len(crystals) else previous
    show(crystals, out)
    if out is not None:
        atomic_write_json(out.with_name(out.name + ".meta.json"), {**result.meta, "rows": len(crystals), "shard": shard})
    if per_rotation is not None and result.rotations is not None:
        write_table(result.rotations, per_rotation)
    if result.partial:
        where = f"; re-run with --resume -o {out} to continue" if out is not None else ""
        typer.echo(f"interrupted: partial output, {len(crystals)} rows{where}", err=True)
        raise typer.Exit(code=130)
    _report_problems(crystals, inputs or [], sharded=shard is not None)


def check_prediction_options(precision: str, sampler: Optional[str], threshold: Optional[float]) -> None:
    """The checks `predict` and `screen` share, before any work."""
    if precision not in ("auto", "fp32", "bf16"):
        fail(f"--precision must be auto, fp32 or bf16, not {precision!r}")
    if sampler not in (None, *SAMPLERS):
        fail(f"--sampler must be haar, sobol or xiespp, not {sampler!r}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be within [0, 1], not {threshold}")


def _report_problems(crystals, inputs: list[str], sharded: bool = False) -> None:
    """Counts of rows that failed on stderr; exit status 1 when nothing was predicted or a path is missing
    (an empty shard is fine: small inputs leave some of N shards empty)."""
    if sharded and crystals.empty:
        typer.echo("this shard holds no crystal of the inputs", err=True)
        return
    status = crystals["status"].astype(str)
    n_err = int((status != "ok").sum())
    if n_err:
        typer.echo(f"{n_err} of {len(crystals)} crystals could not be predicted (see the error column)", err=True)
    missing = [p for p in inputs if not Path(p).exists() and not Path(p).is_symlink()
               and not any(ch in p for ch in "*?[") and "\n" not in p]
    for path in missing:
        typer.echo(f"error: input path {path} does not exist", err=True)
    if missing or not (status == "ok").any():
        raise typer.Exit(code=1)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job) is handled like Ctrl-C: the finished rows are kept."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (e.g. inside a test runner's worker): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# well-known synthesized crystals, each from its space group, lattice and Wyckoff positions as
# textbooks give them: (id, space group, lattice, species, fractional coordinates)
MADE = (
    ("NaCl_rock_salt", "Fm-3m", ("cubic", 5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ("Si_diamond", "Fd-3m", ("cubic", 5.431), ["Si"], [[0, 0, 0]]),
    ("GaAs_zincblende", "F-43m", ("cubic", 5.653), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
    ("MgO_rock_salt", "Fm-3m", ("cubic", 4.212), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ("CsCl", "Pm-3m", ("cubic", 4.123), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ("CaF2_fluorite", "Fm-3m", ("cubic", 5.463), ["Ca", "F"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
    ("Cu_fcc", "Fm-3m", ("cubic", 3.615), ["Cu"], [[0, 0, 0]]),
    ("Fe_bcc", "Im-3m", ("cubic", 2.8665), ["Fe"], [[0, 0, 0]]),
    ("Au_fcc", "Fm-3m", ("cubic", 4.078), ["Au"], [[0, 0, 0]]),
    ("SrTiO3_perovskite", "Pm-3m", ("cubic", 3.905), ["Sr", "Ti", "O"], [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]),
    ("TiO2_rutile", "P4_2/mnm", ("tetragonal", 4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3048, 0.3048, 0]]),
    ("TiO2_anatase", "I4_1/amd", ("tetragonal", 3.785, 9.514), ["Ti", "O"], [[0, 0, 0], [0, 0, 0.2081]]),
    ("ZnO_wurtzite", "P6_3mc", ("hexagonal", 3.25, 5.207), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.3825]]),
    ("Al2O3_corundum", "R-3c", ("hexagonal", 4.759, 12.991), ["Al", "O"], [[0, 0, 0.3523], [0.3064, 0, 0.25]]),
    ("C_graphite", "P6_3/mmc", ("hexagonal", 2.464, 6.711), ["C", "C"], [[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]]),
)


def demo_crystals() -> list:
    """The demo's crystals: well-known synthesized ones (:data:`MADE`), hypothetical polymorphs of
    made compositions, and absurd ones.

    Returns:
        (group, structure) pairs; each pymatgen Structure has an ``id``.
    """
    from pymatgen.core import Lattice, Structure

    def named(structure, rid):
        structure.properties = {"id": rid}
        return structure

    made = [("made", named(Structure.from_spacegroup(group, getattr(Lattice, shape[0])(*shape[1:]), species, coords),
                           rid)) for rid, group, shape, species, coords in MADE]
    rocksalt = made[0][1]
    squeezed = rocksalt.copy()
    squeezed.scale_lattice(rocksalt.volume * 0.7)
    hypothetical = [
        ("hypothetical", named(Structure(Lattice.cubic(3.42), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                               "NaCl_in_CsCl_structure")),
        ("hypothetical", named(Structure(Lattice.cubic(2.53), ["Si"], [[0, 0, 0]]), "Si_simple_cubic")),
        ("hypothetical", named(Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.86), ["Ti", "O"],
                                                         [[0, 0, 0], [0.25, 0.25, 0.25]]), "TiO2_in_fluorite_structure")),
    ]
    absurd = [
        ("absurd", named(squeezed, "NaCl_compressed_30pc")),
        ("absurd", named(Structure.from_spacegroup("Fd-3m", Lattice.cubic(6.0), ["Au"], [[0, 0, 0]]),
                         "Au_in_diamond_structure")),
    ]
    return made + hypothetical + absurd


def demo(
    ensemble: int = typer.Option(30, "--ensemble", "-E"),
    xiespp_weights: Optional[Path] = typer.Option(
        None, help="Published XIE-SPP weights0500.h5 to show beside the default model (default: "
                   "shared/reference/xiespp beside the shared data, when there)."),
) -> None:
    """Predict with the default model on made, hypothetical and absurd crystals; print its benchmark line."""
    from cosynth.config import data_root
    from cosynth.models.registry import DEFAULT_MODEL, PRETRAINED_DIR, load_model, published_xiespp
    from cosynth.predict import predict as run_predict
    from cosynth.represent.energy import ABOVE_HULL

    pairs = demo_crystals()
    inputs, groups = [item for _, item in pairs], [group for group, _ in pairs]
    loaded = load_model(DEFAULT_MODEL)
    typer.echo(f"cosynth demo: default model {DEFAULT_MODEL!r} ({loaded.family}, inputs: {loaded.inputs}) on "
               f"{len(pairs)} crystals: well-known made ones, hypothetical polymorphs and absurd ones\n")
    table = run_predict(inputs, loaded, ensemble=ensemble, seed=0, progress=True).crystals.assign(group=groups)
    means = {DEFAULT_MODEL: _group_means(table)}
    weights = xiespp_weights or data_root(must_exist=False).parent / "reference" / "xiespp" / "weights0500.h5"
    if weights.is_file():
        published = run_predict(inputs, published_xiespp(weights), ensemble=ensemble, seed=0).crystals
        table["xiespp"] = published["likelihood"].to_numpy()
        means["published XIE-SPP"] = _group_means(published.assign(group=groups))
    shown = [c for c in ("group", "id", "formula", "modality", "likelihood", "std", "label", ABOVE_HULL,
                         "xiespp", "status", "error") if c in table.columns]
    print_table(table[shown])
    typer.echo("\nMean likelihood by group (made / hypothetical / absurd): " + "; ".join(
        f"{name} {' / '.join(f'{v:.2f}' for v in values)}" for name, values in means.items()))
    typer.echo(benchmark_line(loaded) + f"\nIts card: {PRETRAINED_DIR / (DEFAULT_MODEL + '.md')}")


def _group_means(table) -> list[float]:
    """Mean likelihood of the demo's made, hypothetical and absurd crystals (rows that were predicted)."""
    ok = table[table["status"] == "ok"]
    return [float(ok.loc[ok["group"] == g, "likelihood"].mean()) for g in ("made", "hypothetical", "absurd")]


def benchmark_line(loaded) -> str:
    """One line with a model's test metrics as stored in its file."""
    m = loaded.metrics
    if "within_origin_auc" in m:
        return (f"Benchmark (test split, `cosynth benchmark synth`): ROC AUC {m['roc_auc']:.3f}, within-origin AUC "
                f"{m['within_origin_auc']:.3f}, polymorph-pair AUC {m['polymorph_pair_auc']:.3f}, ECE {m['ece']:.3f}.")
    return (f"The model's test ROC AUC is {m.get('roc_auc', float('nan')):.3f}; read its limits before trusting a "
            "likelihood.")


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    app.command()(predict)
    app.command()(demo)
