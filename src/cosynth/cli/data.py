"""`cosynth data …`: load, build, generate, split and check datasets (cosynth.data).

Each command is a thin layer over the function of the same name in cosynth.data; heavy
imports happen inside the commands so that `cosynth --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from cosynth.cli.common import fail

data_app = typer.Typer(no_args_is_help=True,
                       help="Crystal tables: load shared/public data, build the bias-study datasets, "
                            "generate CSPD-like negatives, split, check leakage.")
build_app = typer.Typer(no_args_is_help=True, help="Build the bias-study datasets (table + dataset card).")
data_app.add_typer(build_app, name="build")




def _fractions(text: str) -> tuple[float, float, float]:
    try:
        fr = tuple(float(x) for x in text.split("/"))
        if len(fr) != 3 or not all(f > 0 for f in fr):
            raise ValueError
    except ValueError:
        fail(f"--split must look like 60/20/20, got {text!r}")
    return fr


def _formulas(values: Optional[List[str]], file: Optional[Path]) -> Optional[list[str]]:
    out = []
    for v in values or []:
        out += [f.strip() for f in v.split(",") if f.strip()]
    if file is not None:
        out += [line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return out or None


def _report(table, out: Optional[Path], what: str, left_out: bool = False) -> None:
    n_struct = int(table.has_structure().sum()) if len(table) else 0
    refused = f"{len(table.errors)} rows/candidates left out" if left_out else f"{len(table.errors)} refused"
    typer.echo(f"{what}: {len(table)} rows ({n_struct} with structure), {refused}"
               + (f" → {out}" if out else ""), err=True)
    if len(table.errors):
        top = table.errors["error"].str.slice(0, 100).value_counts().head(5)
        for msg, n in top.items():
            typer.echo(f"  {n} × {msg}", err=True)


def _write_errors(table, out: Optional[Path]) -> None:
    if out is not None and len(table.errors):
        from cosynth.data.cards import card_paths

        path = card_paths(out)[0].with_name(card_paths(out)[0].name.replace(".card.md", ".errors.csv"))
        table.errors.to_csv(path, index=False)


@data_app.command("load")
def load_cmd(
    source: str = typer.Argument(..., help="Shared dataset name (e.g. mp_synth_structures), a CGCNN folder "
                                           "(CIFs + id_prop.csv) or a table file."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder of the shared datasets (default ../shared/data)."),
    subset: Optional[str] = typer.Option(None, help="File of a shared dataset, e.g. perov5, syncotrain, li_conductivity."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table (.parquet, .csv, .csv.gz, .jsonl)."),
) -> None:
    """Load a dataset into a validated crystal table; refused rows are listed with their reason."""
    from cosynth.data.loaders import load

    try:
        table = load(source, root, subset=subset)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    if out is not None:
        table.write(out)
        _write_errors(table, out)
    _report(table, out, f"loaded {source}" + (f" ({subset})" if subset else ""))
    if out is None:
        typer.echo(table.frame.drop(columns=["cif"], errors="ignore").head(20).to_string(index=False))


@data_app.command("load-optimade")
def load_optimade_cmd(
    base_url: str = typer.Argument(..., help="OPTIMADE base URL, e.g. https://optimade.materialsproject.org"),
    filter: str = typer.Option("", "--filter", "-f", help='OPTIMADE filter, e.g. \'chemical_formula_reduced="O2Si"\''),
    max_results: int = typer.Option(100, help="Stop after this many structures."),
    out: Optional[Path] = typer.Option(None, "--output", "-o"),
) -> None:
    """Load structures from any OPTIMADE database (MP, COD, Alexandria, OQMD, …)."""
    from cosynth.data.optimade import load_optimade

    try:
        table = load_optimade(base_url, filter, max_results=max_results)
    except (ValueError, RuntimeError, ConnectionError) as err:
        fail(str(err))
    if out is not None:
        table.write(out)
    _report(table, out, f"loaded {base_url}")


@build_app.command("single-source")
def build_single_source_cmd(
    root: Optional[Path] = typer.Option(None, "--root", help="Folder of the shared datasets (default ../shared/data)."),
    out: Path = typer.Option(Path("single_source.parquet"), "--output", "-o", help="Table to write; the card goes next to it."),
    formula: Optional[List[str]] = typer.Option(None, "--formula", help="Restrict to these formulas (repeat or comma-separate)."),
    formula_file: Optional[Path] = typer.Option(None, "--formula-file", exists=True, dir_okay=False),
    structure_source: Optional[List[str]] = typer.Option(None, "--structure-source", help="Keep only these origins."),
    literature_top: Optional[int] = typer.Option(
        None, "--literature-top", min=1, help="Keep the N compositions most mentioned in the literature (108: the "
                                              "paper-like variant)."),
    balance: bool = typer.Option(False, "--balance", help="Downsample the larger class (per origin with --stratify-source)."),
    stratify_source: bool = typer.Option(False, "--stratify-source", help="Stratify split (and --balance) by label × structure_source."),
    group_by_formula: bool = typer.Option(False, "--group-by-formula", help="Keep all polymorphs of a formula in one split."),
    split: str = typer.Option("60/20/20", help="Train/val/test percentages."),
    seed: int = typer.Option(0),
) -> None:
    """MP polymorphs (both MP folders; CPUL labels first) of formulas with ICSD-tagged and theoretical entries."""
    from cosynth.data.builders import build_single_source

    try:
        table = build_single_source(root, out, formulas=_formulas(formula, formula_file),
                                    structure_sources=structure_source, literature_top=literature_top,
                                    balance=balance, stratify_source=stratify_source, fractions=_fractions(split),
                                    seed=seed,
                                    group_by_formula=group_by_formula)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    _report(table, out, "single-source", left_out=True)
    _show_card(out)


@build_app.command("mixed-source")
def build_mixed_source_cmd(
    root: Optional[Path] = typer.Option(None, "--root", help="Folder of the shared datasets (default ../shared/data)."),
    out: Path = typer.Option(Path("mixed_source.parquet"), "--output", "-o", help="Table to write; the card goes next to it."),
    n_formulas: int = typer.Option(108, "--n-formulas", help="Most-studied formulas to use (most positive polymorphs)."),
    formula: Optional[List[str]] = typer.Option(None, "--formula", help="Use these formulas instead (repeat or comma-separate)."),
    formula_file: Optional[Path] = typer.Option(None, "--formula-file", exists=True, dir_okay=False),
    ratio: float = typer.Option(5.0, help="Positives per negative."),
    volume: str = typer.Option("covalent", help="Volume rule of the negatives: covalent, reference or unchanged."),
    max_prototypes: int = typer.Option(15, "--max-prototypes", help="Prototypes tried per formula."),
    packing_fraction: Optional[float] = typer.Option(None, "--packing-fraction", help="Covalent rule: sphere packing fraction (default 0.7405)."),
    group_by_formula: bool = typer.Option(False, "--group-by-formula"),
    split: str = typer.Option("60/20/20", help="Train/val/test percentages."),
    seed: int = typer.Option(0),
) -> None:
    """Experimental positives vs CSPD-like generated negatives of the same formulas."""
    from cosynth.data.builders import build_mixed_source

    try:
        table = build_mixed_source(root, out, n_formulas=n_formulas, formulas=_formulas(formula, formula_file),
                                   ratio=ratio, volume=volume, fractions=_fractions(split), seed=seed,
                                   group_by_formula=group_by_formula, max_prototypes=max_prototypes,
                                   packing_fraction=packing_fraction)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    _report(table, out, "mixed-source", left_out=True)
    _show_card(out)


def _show_card(out: Path) -> None:
    from cosynth.data.cards import card_paths

    md, js = card_paths(out)
    card = json.loads(js.read_text())
    dc = card.get("density_comparison") or {}
    for name, r in dc.items():
        if isinstance(r, dict) and r.get("n_formulas"):
            typer.echo(f"density neg/pos, {name}: median ratio {r['median_ratio']:.3f} over {r['n_formulas']} formulas, "
                       f"Wilcoxon p={r['wilcoxon_p']}", err=True)
    typer.echo(f"card: {md}", err=True)


@data_app.command("generate-negatives")
def generate_negatives_cmd(
    formula: Optional[List[str]] = typer.Option(None, "--formula", help="Target formulas (repeat or comma-separate)."),
    formula_file: Optional[Path] = typer.Option(None, "--formula-file", exists=True, dir_okay=False),
    pool: str = typer.Option("mp_synth_structures", help="Prototype pool: shared dataset name or table file."),
    known: Optional[str] = typer.Option(None, help="Table of known experimental structures to exclude (default: "
                                                   "label-1 rows of the pool when it has a label column)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder of the shared datasets (default ../shared/data)."),
    out: Path = typer.Option(..., "--output", "-o", help="Table of generated structures."),
    volume: str = typer.Option("covalent", help="covalent, reference (median volume/atom of the known structures) or unchanged."),
    packing_fraction: float = typer.Option(0.7405, "--packing-fraction"),
    min_distance_factor: float = typer.Option(0.7, "--min-distance-factor", help="Reject pairs closer than this × covalent radii sum."),
    max_prototypes: int = typer.Option(30, "--max-prototypes"),
    max_per_formula: Optional[int] = typer.Option(None, "--max-per-formula"),
    seed: int = typer.Option(0),
) -> None:
    """Hypothetical polymorphs by prototype substitution (CSPD-like); rejections go to <out>.errors.csv."""

    from cosynth.data.generate import GeneratorConfig, generate_negatives, reference_volumes
    from cosynth.data.loaders import load

    targets = _formulas(formula, formula_file)
    if not targets:
        fail("give target formulas with --formula or --formula-file")
    try:
        config = GeneratorConfig(volume=volume, packing_fraction=packing_fraction, min_distance_factor=min_distance_factor,
                                 max_prototypes=max_prototypes, max_per_formula=max_per_formula, seed=seed)
        pool_table = load(pool, root, parse=False) if not Path(pool).exists() else load(pool, root)
        known_table = load(known, root) if known else None
        if known_table is None and "label" in pool_table.frame.columns:
            known_table = pool_table.subset((pool_table.frame["label"] == 1).fillna(False).to_numpy())
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    from cosynth.data.table import normalize_formula

    wanted = set()
    for f in targets:
        try:
            wanted.add(normalize_formula(f))
        except ValueError as err:
            fail(str(err))
    known_map: dict = {}
    if known_table is not None:
        sel = known_table.subset(known_table.frame["formula"].isin(wanted).to_numpy())
        for rid, f, s in zip(sel.frame["id"], sel.frame["formula"], sel.structures()):
            if s is not None:
                known_map.setdefault(f, []).append((rid, s))
    table = generate_negatives(targets, pool_table, known=known_map, reference_volumes=reference_volumes(known_map),
                               config=config)
    table.write(out)
    _write_errors(table, out)
    _report(table, out, "generated")


@data_app.command("split")
def split_cmd(
    table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Crystal table."),
    out: Path = typer.Option(..., "--output", "-o"),
    label: Optional[str] = typer.Option("label", help="Column to stratify by ('' for none)."),
    split: str = typer.Option("60/20/20", help="Train/val/test percentages."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Keep groups of this column together (e.g. formula)."),
    seed: int = typer.Option(0),
) -> None:
    """Add a split column (train/val/test), stratified by label, optionally grouped."""
    from cosynth.data.splits import split as run_split
    from cosynth.data.table import read_table

    try:
        tab = read_table(table, parse=False)
        result = run_split(tab, label=label or None, fractions=_fractions(split), seed=seed, group_by=group_by)
    except ValueError as err:
        fail(str(err))
    result.write(out)
    counts = result.frame["split"].value_counts().to_dict()
    typer.echo(f"split {len(result)} rows: {counts} → {out}", err=True)


@data_app.command("check-leakage")
def check_leakage_cmd(
    table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Crystal table with a split column."),
    split_column: str = typer.Option("split", "--split-column"),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="CSV of the leaking pairs."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when any pair leaks."),
) -> None:
    """Identical or near-identical structures across splits (pymatgen StructureMatcher)."""
    from cosynth.data.splits import check_leakage
    from cosynth.data.table import read_table

    try:
        report = check_leakage(read_table(table, parse=False), split_column=split_column)
    except ValueError as err:
        fail(str(err))
    if out is not None:
        report.pairs.to_csv(out, index=False)
    typer.echo(json.dumps(report.summary, indent=2))
    if strict and not report.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer, train_app: typer.Typer, reproduce_app: typer.Typer) -> None:
    """Add this group's commands to the CLI."""
    app.add_typer(data_app, name="data")
