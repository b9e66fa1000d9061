"""The synthesizability benchmark's report and model cards, generated from its scores (never by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.io.files import atomic_write_json, atomic_write_text, write_table

TARGETS = {"roc_auc": (">=", 0.88), "within_origin_auc": (">=", 0.78), "polymorph_pair_auc": (">=", 0.70),
           "ece": ("<=", 0.05)}
SHOWN = ("roc_auc", "pr_auc", "within_origin_auc", "polymorph_pair_auc", "polymorph_pair_auc_any_origin", "ece", "brier",
         "accuracy", "precision", "recall", "specificity")
COMMAND = "cosynth benchmark synth"
FULL_COVERAGE = 0.99  # a score on at least this share of the test rows counts as covering them all
ROWS_WORDS = {True: "that baseline's test rows", False: "all test rows"}  # where a winner met a baseline


def _cell(report: dict, key: str) -> str:
    value = report["metrics"].get(key)
    if value is None or not np.isfinite(value):
        return "–"
    low, high = report["ci"].get(key, [np.nan, np.nan])
    if key in ("roc_auc", "within_origin_auc", "polymorph_pair_auc") and np.isfinite(low):
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}"


def results_table(result: dict) -> pd.DataFrame:
    """One row per model: kind, test coverage and every metric (ranking AUCs with their 95 % CIs)."""
    rows = []
    for name, report in result["scores"].items():
        kind = ("leaky reference" if name in result["leaky"] else "baseline" if name in result["baselines"]
                else "candidate")
        if name == result["winner"]:
            kind = "candidate, chosen"
        rows.append({"model": name, "kind": kind, "test rows": report["n"], **{k: _cell(report, k) for k in SHOWN}})
    order = {"candidate, chosen": 0, "candidate": 1, "baseline": 2, "leaky reference": 3}
    return pd.DataFrame(rows).sort_values(["kind", "model"], key=lambda c: c.map(order) if c.name == "kind" else c)


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


DECOY_SENTENCE = ("squeezed to x0.6-0.8 their volume, stretched to x1.3-1.6, or moved into a training crystal of "
                  "the same stoichiometry and another space group at their own volume per atom")


def decoy_table(decoys: dict) -> pd.DataFrame:
    """One row per model: the share of each kind of decoy it scores below its original."""
    kinds = [k for k in next(iter(decoys.values())) if k not in ("all", "n")]
    return pd.DataFrame([{"model": name, "decoys": d["n"], **{k: _number(d[k]) for k in kinds},
                          "all": _number(d["all"])} for name, d in decoys.items()])


def beats_baselines(result: dict, candidate: str | None = None) -> dict[str, dict]:
    """For a candidate (default: the winner) and each key AUC: does its CI's lower end clear every
    non-leaky baseline's value? For the winner, a baseline that lacks rows is met on its own rows
    (``winner_on_baseline_rows``); the baseline it clears by the least is the one shown."""
    candidate = candidate or result["winner"]
    winner = result["scores"].get(candidate or "")
    if winner is None:
        return {}
    same_rows = result.get("winner_on_baseline_rows", {}) if candidate == result["winner"] else {}
    out = {}
    for key in ("roc_auc", "within_origin_auc", "polymorph_pair_auc"):
        margins = {}
        for b in result["baselines"]:
            value = result["scores"][b]["metrics"][key] if b in result["scores"] else np.nan
            if b not in result["leaky"] and np.isfinite(value):
                low = same_rows.get(b, winner)["ci"][key][0]
                margins[b] = (low - value, low, value, b in same_rows)
        if not margins:
            out[key] = {"winner_ci_low": winner["ci"][key][0], "best_baseline": None, "best_baseline_value": None,
                        "on_its_rows": False, "beats_by_more_than_ci": False}
            continue
        hardest = min(margins, key=lambda b: margins[b][0])
        margin, low, value, on_its_rows = margins[hardest]
        out[key] = {"winner_ci_low": low, "best_baseline": hardest, "best_baseline_value": value,
                    "on_its_rows": on_its_rows, "beats_by_more_than_ci": bool(margin > 0)}
    return out


def targets_met(result: dict) -> dict[str, dict]:
    winner = result["scores"].get(result["winner"] or "")
    if winner is None:
        return {}
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = winner["metrics"][key]
        out[key] = {"value": value, "target": f"{op} {bound}",
                    "met": bool(value >= bound if op == ">=" else value <= bound)}
    return out


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _figures(out: Path, bench, result: dict) -> list[str]:
    from sklearn.metrics import roc_auc_score, roc_curve

    from cosynth.report import figures

    f = bench.frame
    y = f["label"].to_numpy(int)
    test = (f["split"] == "test").to_numpy()
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    names = []
    curves = {}
    full = [n for n, r in result["scores"].items() if r["coverage"] >= FULL_COVERAGE]
    keep = test & np.all([np.isfinite(bench.scores[n].to_numpy(float)) for n in full], axis=0)
    for name in full:
        s = bench.scores[name].to_numpy(float)
        fpr, tpr, _ = roc_curve(y[keep], s[keep])
        curves[name] = (fpr, tpr, float(roc_auc_score(y[keep], s[keep])))
    fig = figures.roc_figure(curves, title="Test ROC, rows every model covers")
    fig.savefig(fig_dir / "roc.png", dpi=120)
    names.append("figures/roc.png")
    winner = result["winner"]
    if winner:
        cal = result["scores"][winner]["calibration"]
        s = bench.scores[winner].to_numpy(float)
        p = 1 / (1 + np.exp(-(cal["a"] * s + cal["b"])))
        fig = figures.reliability_diagram(y[test], p[test], title=f"Reliability of {winner} (test)")
        fig.savefig(fig_dir / "reliability.png", dpi=120)
        names.append("figures/reliability.png")
        shown = [m for m in (winner, "descriptor_trees", "roost_composition", "xiespp_published")
                 if m in result["scores"]]
        table = pd.DataFrame({m: {o: v["roc_auc"] for o, v in result["scores"][m]["per_origin"].items()}
                              for m in shown}).dropna(how="all")
        fig = figures.grouped_bars(table, "Test ROC AUC within each origin", "ROC AUC", hline=0.5)
        fig.savefig(fig_dir / "per_origin.png", dpi=120)
        names.append("figures/per_origin.png")
    import matplotlib.pyplot as plt

    plt.close("all")
    return names


def balancing_effects(result: dict) -> list[str]:
    """What per-origin class balancing changed, in words, for each candidate trained with and without it."""
    keys = ("roc_auc", "within_origin_auc", "polymorph_pair_auc")
    lines = []
    for name in result["scores"]:
        plain = name.removesuffix("_balanced")
        if name == plain or plain not in result["scores"]:
            continue
        change = ", ".join(f"{k} {result['scores'][plain]['metrics'][k]:.3f} → {result['scores'][name]['metrics'][k]:.3f}"
                           for k in keys)
        lines.append(f"- `{plain}` → `{name}` (per-origin class balancing, test): {change}.")
    return lines


def _pair_sentence(result: dict) -> str:
    """What the polymorph pairs of the test split are, and why they are kept within one origin."""
    origin = result["scores"].get("origin_only", {})
    pairs = origin.get("polymorph_pairs")
    if not pairs or not pairs["pairs"]:
        return ""
    return (f"The test split has {pairs['pairs']} such pairs in {pairs['groups']} groups of one formula and one "
            f"origin (the largest, {pairs['largest_group']}, holds {pairs['largest_pairs']}). *Any origin*: pairs of "
            "one formula from any origin, averaged over formulas; the polymorphs of a formula often come from "
            "different origins, so the origin alone ranks them "
            f"{origin['metrics']['polymorph_pair_auc_any_origin']:.3f} there.")


def _steadiness(result: dict, metric: str, baseline: str) -> str:
    """One metric of the winner and of the hardest baseline, on test and on validation (and the
    winner's on that baseline's test rows, when it lacks some)."""
    def groups(report):
        return f" ({report['polymorph_pairs']['groups']} groups)" if metric == "polymorph_pair_auc" else ""

    def both(name):
        report = result["scores"][name]
        return f"`{name}` {report['metrics'][metric]:.3f} on test{groups(report)}, {report['validation'][metric]:.3f} on validation"

    line = f"- {metric}: {both(result['winner'])}; {both(baseline)}"
    if (same := result.get("winner_on_baseline_rows", {}).get(baseline)) is not None:
        line += f"; `{result['winner']}` on `{baseline}`'s test rows {same['metrics'][metric]:.3f}{groups(same)}"
    return line


SCORES_FILE = "scores.parquet"


def committed_scores(bench) -> pd.DataFrame:
    """Every model's score on the validation and test rows, keyed on crystal ids: all that judging
    needs, small enough to keep beside the report, so that a later run can add a candidate without
    retraining the others."""
    held_out = (bench.frame["split"] != "train").to_numpy()
    return bench.scores.loc[held_out].reset_index(drop=True)


def write_report(out: Path, bench, result: dict) -> None:
    """``README.md``, ``benchmark.json`` and ``figures/`` in ``out``, all from ``result`` and the scores."""
    out.mkdir(parents=True, exist_ok=True)
    result["figures"] = _figures(out, bench, result)
    result["beats_baselines"] = beats_baselines(result)
    result["targets"] = targets_met(result)
    atomic_write_json(out / "benchmark.json", result)
    write_table(committed_scores(bench), out / SCORES_FILE)
    c = result["config"]
    quick = " (QUICK RUN: a smoke test on a small subset, not a result)" if c["quick"] else ""
    lines = [f"# Synthesizability benchmark{quick}", "",
             f"Generated by `{COMMAND}{' --quick' if c['quick'] else ''}` in {result['wall_seconds_this_command'] / 60:.1f} "
             f"min (this invocation; its stages, including those whose scores it reused from earlier invocations, took "
             f"{sum(result['seconds'].values()) / 60:.1f} min in all, stage seconds in `benchmark.json`). Every number below comes from "
             "`benchmark.json` in this folder.", "",
             "## Data", "",
             f"- {sum(result['rows'].values())} labelled Materials Project structures (`mp_synth_structures` + "
             f"`mp_extra_structures`); labels: {', '.join(f'{k} {v}' for k, v in result['label_sources'].items())} "
             "(CPUL first, then PU-CGCNN, then SynCoTrain).",
             "- Split (seed {seed}, fingerprint `{fp}`): grouped by reduced formula, stratified by origin × label: "
             .format(seed=c["seed"], fp=result["split_fingerprint"])
             + ", ".join(f"{s} {n} ({result['positives'][s]} positive)" for s, n in result["rows"].items()) + ".",
             f"- Leakage checks: {result['leakage']['ids_in_two_splits']} MP ids and "
             f"{result['leakage']['formulas_in_two_splits']} formulas in two splits (near-duplicate structures share "
             "their formula, so none can cross splits).",
             f"- Composition-only training rows (PU-CGCNN lists, no validation/test formula): "
             f"{c['composition_rows'] if c['composition_rows'] is not None else 'all'}.", "",
             "## Test results", "",
             "Each score is calibrated on validation (Platt scaling, so rankings are unchanged; the voxel CNN "
             "is judged as it ships, a mean over rotations); threshold "
             "metrics use a threshold fixed on validation (best balanced accuracy). Brackets: 95 % bootstrap "
             "intervals over test formulas. *Within-origin*: mean ROC AUC inside each origin that has both classes "
             "(origin alone scores 0.5). *Polymorph pairs*: for each group of test rows of one formula and one origin "
             "with both labels, the share of its (ICSD, theoretical) pairs ranked right, averaged over the groups "
             "so that each counts once (composition alone and origin alone score 0.5). "
             + _pair_sentence(result) + " Rows a baseline lacks (e.g. no energy above hull) are left out of that "
             "baseline's row only (`test rows`).", "",
             _md_table(results_table(result)), ""]
    if decoys := result.get("decoys"):
        lines += [f"**Made-up crystals.** Decoys of test positives, each {DECOY_SENTENCE} (the per-crystal trees "
                  "were trained with squeezed and stretched decoys of training positives, never with moved ones): "
                  "the share of decoys a model scores below the very crystal each was made from "
                  "(1: it always prefers the real crystal; 0.5: it cannot tell, as composition and origin alone "
                  "cannot by construction; below 0.5: it prefers the made-up one). Models without a file in this run "
                  "and scores a made-up crystal cannot have are left out.", "", _md_table(decoy_table(decoys)), ""]
    if result["winner"]:
        lines += [f"**Chosen on validation**: `{result['winner']}`, the single model with the best mean of overall, "
                  "within-origin and polymorph-pair validation AUC; it ships as `cosynth-synth`, and the targets "
                  "below are its test values.", ""]
        lines += ["| target | value | met |", "|---|---|---|"]
        lines += [f"| {k} {v['target']} | {v['value']:.3f} | {'yes' if v['met'] else 'no'} |"
                  for k, v in result["targets"].items()]
        lines += ["", "For each metric, the non-leaky baseline that the winner clears by the least margin (a baseline "
                  "that lacks rows is compared on its own rows):", "",
                  "| metric | hardest baseline | its value | winner's CI low | on | beaten by more than the CI |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['best_baseline']} | {_number(v['best_baseline_value'])} | {v['winner_ci_low']:.3f} | "
                  f"{ROWS_WORDS[v['on_its_rows']]} | {'yes' if v['beats_by_more_than_ci'] else 'no'} |"
                  for k, v in result["beats_baselines"].items()]
        lines += ["", "How steady these are, test beside validation (a metric over few groups can swing far):", ""]
        lines += [_steadiness(result, metric, v["best_baseline"]) for metric, v in result["beats_baselines"].items()
                  if v["best_baseline"]]
        lines += [""]
    lines += ["## Candidates", ""] + [f"- `{k}`: {v}" for k, v in result["candidate_words"].items()] + [""]
    if balanced := balancing_effects(result):
        lines += ["What balancing the classes within every origin changed (so that the origin alone says nothing "
                  "about the label in training):", "", *balanced, ""]
    lines += ["## Baselines", ""] + [f"- `{k}`: {v}" for k, v in result["baselines"].items()] + [""]
    lines += ["## Figures", ""] + [f"![{Path(p).stem}]({p})" for p in result["figures"]] + [""]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")


def model_card(name: str, candidate: str, result: dict) -> str:
    """The card of an exported model, from the benchmark's numbers."""
    report = result["scores"][candidate]
    lines = [f"# Model card: {name}", "",
             f"Exported by `{COMMAND} --install` from the candidate `{candidate}` (split fingerprint "
             f"`{result['split_fingerprint']}`). All numbers are its test results in the benchmark report "
             "(`reports/synth-benchmark/`).", "",
             f"**What it is**: {result.get('candidate_words', {}).get(candidate, candidate)}.", "",
             "**What it predicts**: the likelihood that a crystal (or, for composition-aware models, a formula) is "
             "experimentally realised (an ICSD-tagged Materials Project entry) rather than only computed. "
             + ("Likelihoods are calibrated on the validation split (Platt scaling)" if report.get("calibrated", True)
                else "Likelihoods are the mean over random rotations, not recalibrated")
             + f"; `label` uses the validation threshold {report['threshold']:.3f}.", "",
             "| metric | test value |", "|---|---|"]
    lines += [f"| {k} | {_cell(report, k)} |" for k in SHOWN]
    rivals = [b for b in result["baselines"] if b in result["scores"] and b not in result["leaky"]]
    lines += ["", "**Beside the shortcut baselines** on the test rows each has (ROC AUC / within-origin / polymorph "
              "pairs):"]
    lines += [f"- `{b}` ({result['scores'][b]['n']} rows): " + " / ".join(
        _cell(result["scores"][b], k) for k in ("roc_auc", "within_origin_auc", "polymorph_pair_auc")) for b in rivals]
    beats = beats_baselines(result, candidate)
    beaten = [k for k, v in beats.items() if v["beats_by_more_than_ci"]]
    lines += ["", f"It beats every baseline by more than its CI on: {', '.join(beaten) or 'none of these metrics'}."]
    lines += [f"On {k} it does not clear `{v['best_baseline']}` ({_number(v['best_baseline_value'])}; its own CI's "
              f"lower end {v['winner_ci_low']:.3f} on {ROWS_WORDS[v['on_its_rows']]})."
              for k, v in beats.items() if not v["beats_by_more_than_ci"] and v["best_baseline"]]
    if (made_up := result.get("decoys", {}).get(candidate)) is not None:
        lines += ["", f"**Made-up crystals**: of {made_up['n']} decoys of test positives ({DECOY_SENTENCE}), the share "
                  f"it scores below the crystal each was made from is {made_up['all']:.3f} ("
                  + ", ".join(f"{k} {v:.3f}" for k, v in made_up.items() if k not in ("all", "n") and v is not None)
                  + ")."]
    lines += ["", "**Limits**: labels are MP snapshots (some theoretical entries have been made since); origins "
              "differ in their positive rate, which is why within-origin and polymorph-pair AUCs are reported; "
              "crystals unlike Materials Project entries are outside what it has seen."]
    return "\n".join(lines) + "\n"
