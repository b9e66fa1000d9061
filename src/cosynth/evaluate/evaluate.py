"""Evaluate a model on a labelled table: the paper's metrics, ROC, likelihood histograms,
learning curves; regression metrics for regression targets.

``evaluate_scores`` works on any scores (a predictions file, another model's output);
``evaluate_model`` predicts a voxel model on a CrystalTable first. Both write JSON, the figures
and a self-contained HTML page when given an output folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosynth.evaluate.metrics import binary_metrics


def regression_metrics(y_true, y_pred) -> dict:
    """MAE, RMSE and R² over rows where both values are finite."""
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return {"n": 0, "mae": None, "rmse": None, "r2": None}
    resid = p - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"n": int(len(y)), "mae": float(np.abs(resid).mean()), "rmse": float(np.sqrt((resid ** 2).mean())),
            "r2": float(1 - (resid ** 2).sum() / ss_tot) if ss_tot > 0 else None}


def roc_points(y, p, max_points: int = 200) -> dict:
    """The ROC curve (thinned to at most ``max_points`` for JSON).

    Args:
        y: binary labels.
        p: scores; rows with a NaN score are left out.
        max_points: the most points kept (evenly spaced along the curve).

    Returns:
        {"fpr", "tpr", "thresholds"} lists (thresholds clipped to [0, 1]); empty lists when only one class
        is present.
    """
    from sklearn.metrics import roc_curve

    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    keep = np.isfinite(p)
    if len(set(y[keep].tolist())) < 2:
        return {"fpr": [], "tpr": [], "thresholds": []}
    fpr, tpr, thr = roc_curve(y[keep], p[keep])
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.clip(thr, 0, 1).tolist()}


def is_binary(values) -> bool:
    v = pd.Series(values).dropna()
    return len(v) > 0 and set(np.unique(v.astype(float))) <= {0.0, 1.0}


def evaluate_scores(y_true, scores, *, threshold: float = 0.5, task: str | None = None) -> dict:
    """Metrics of ``scores`` against ``y_true``: classification or regression.

    Rows without a label are left out.

    Args:
        y_true: labels or targets.
        scores: predicted likelihoods (classification) or values (regression).
        threshold: likelihood at which a row is predicted positive.
        task: ``classification`` or ``regression``; default: classification when ``y_true`` holds only 0 and 1.

    Returns:
        {"task", "metrics"} and, for classification, also the ROC points, the number of unscored rows, a
        25-bin likelihood histogram per class and the mean likelihood per class.
    """
    task = task or ("classification" if is_binary(y_true) else "regression")
    y = np.asarray(pd.to_numeric(pd.Series(y_true), errors="coerce"), float)
    p = np.asarray(scores, float)
    keep = np.isfinite(y)
    if task == "regression":
        return {"task": task, "metrics": regression_metrics(y[keep], p[keep])}
    y, p = y[keep].astype(int), p[keep]
    scored = np.isfinite(p)
    hist_edges = np.linspace(0, 1, 26)
    return {"task": task, "metrics": binary_metrics(y, p, threshold), "roc": roc_points(y, p),
            "unscored": int((~scored).sum()),
            "likelihood_histogram": {"edges": hist_edges.tolist(),
                                     "positive": np.histogram(p[scored & (y == 1)], hist_edges)[0].tolist(),
                                     "negative": np.histogram(p[scored & (y == 0)], hist_edges)[0].tolist()},
            "mean_likelihood": {"positive": float(np.nanmean(p[y == 1])) if (y == 1).any() else None,
                                "negative": float(np.nanmean(p[y == 0])) if (y == 0).any() else None}}


def predict_table(model, table, *, ensemble: int = 20, seed: int = 0, threshold: float = 0.5,
                  sampler: str | None = None, structures=None, workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """Voxel-model predictions for every row of a CrystalTable, aligned with its rows.

    Rows without a structure get status "error" and a message, and the rest is predicted.

    Args:
        model: the loaded model (or what :func:`cosynth.predict.predict` accepts).
        table: the CrystalTable (its ``id`` column names the crystals).
        ensemble, seed, threshold, sampler: rotations per crystal, rotation seed, decision threshold and
            rotation sampler (None: the model's own).
        structures: replaces the table's own (e.g. compressed copies), aligned with its rows.
        workers, progress: image-building processes; a progress bar.

    Returns:
        A frame with id, likelihood, std, consistent, status and error columns, one row per table row.
    """
    from cosynth.predict import predict

    structures = list(table.structures() if structures is None else structures)
    ids = table.frame["id"].astype(str).tolist()
    inputs = []
    for rid, s in zip(ids, structures):
        if s is not None:
            s = s.copy()
            s.properties = {**(s.properties or {}), "id": rid}
            inputs.append(s)
    result = predict(inputs, model, ensemble=ensemble, seed=seed, sampler=sampler, threshold=threshold,
                     workers=workers, progress=progress)
    pred = result.crystals.set_index("id")
    out = pd.DataFrame({"id": ids})
    for col in ("likelihood", "std", "consistent", "status", "error"):
        out[col] = out["id"].map(pred[col])
    for col in ("status", "error"):
        out[col] = out[col].astype(object)
    missing = out["status"].isna()
    out.loc[missing, "status"] = "error"
    out.loc[missing, "error"] = "no structure in this row"
    return out


def evaluate_model(model, table, label: str, *, ensemble: int = 20, seed: int = 0, threshold: float = 0.5,
                   sampler: str | None = None, run_dir=None, out_dir=None, workers: int = 1,
                   title: str | None = None, progress: bool = False) -> dict:
    """Predict ``model`` on a labelled CrystalTable (or path) and evaluate it.

    Args:
        model: a model file or name (:func:`load_model`).
        table: a CrystalTable or a table path.
        label: the label column.
        ensemble, seed, threshold, sampler: as in :func:`predict_table`.
        run_dir: a training run folder; its ``history.csv`` gives learning curves in the report.
        out_dir: write the report here (:func:`write_evaluation`); None writes nothing.
        workers, title, progress: image-building processes; the report's title; a progress bar.

    Returns:
        The :func:`evaluate_scores` result with model, ensemble, seed, rows and errors added.

    Raises:
        ValueError: no label column.
    """
    from cosynth.data.table import CrystalTable, read_table
    from cosynth.models.registry import load_model

    if not isinstance(table, CrystalTable):
        table = read_table(table)
    if label not in table.frame.columns:
        raise ValueError(f"no label column {label!r}; columns: {', '.join(map(str, table.frame.columns))}")
    loaded = load_model(model)
    meta = loaded.meta
    pred = predict_table(loaded, table, ensemble=ensemble, seed=seed, threshold=threshold, sampler=sampler,
                         workers=workers, progress=progress)
    pred[label] = table.frame[label].to_numpy()
    result = evaluate_scores(pred[label], pred["likelihood"], threshold=threshold, task="classification")
    result.update(model=str(meta.get("path")), ensemble=ensemble, seed=seed, rows=int(len(pred)),
                  errors=int((pred["status"] == "error").sum()))
    history = _history(run_dir, meta)
    if out_dir is not None:
        write_evaluation(result, pred, label, out_dir, history=history, title=title)
    return result


def _history(run_dir, meta) -> pd.DataFrame | None:
    if run_dir is not None and (Path(run_dir) / "history.csv").exists():
        return pd.read_csv(Path(run_dir) / "history.csv")
    return None


def write_evaluation(result: dict, predictions: pd.DataFrame, label: str, out_dir, *, history=None,
                     score_column: str = "likelihood", title: str | None = None) -> None:
    """Write ``evaluate.json``, ``predictions.csv``, figures and ``evaluate.html`` to ``out_dir``.

    Args:
        result: the :func:`evaluate_scores` result.
        predictions: per-row predictions with the label and score columns.
        label: the label column of ``predictions``.
        out_dir: output folder, created if missing.
        history: per-epoch training history for learning curves, or None.
        score_column: the score column of ``predictions``.
        title: the page title (default "Evaluation").
    """
    from cosynth.io.files import atomic_write_json
    from cosynth.report import figures
    from cosynth.report.html import HtmlReport

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "evaluate.json", result)
    from cosynth.io.files import write_table

    write_table(predictions, out / "predictions.csv")
    page = HtmlReport(title or "Evaluation")
    m = result["metrics"]
    page.table(pd.DataFrame([{k: v for k, v in m.items() if not isinstance(v, dict)}]))
    if result["task"] == "classification":
        c = m["confusion"]
        page.heading("Confusion matrix")
        page.table(pd.DataFrame({"": ["actual positive", "actual negative"], "predicted positive": [c["tp"], c["fp"]],
                                 "predicted negative": [c["fn"], c["tn"]]}))
        if result.get("errors"):
            page.paragraph(f"{result['errors']} rows could not be predicted (see predictions.csv, column error).")
        y, p = predictions[label].to_numpy(), predictions[score_column].to_numpy(float)
        keep = np.isfinite(p) & pd.notna(predictions[label]).to_numpy()
        if m.get("roc_auc") is not None:
            fig = figures.roc_figure({"model": (result["roc"]["fpr"], result["roc"]["tpr"], m["roc_auc"])})
            fig.savefig(out / "figures" / "roc.png", dpi=110, bbox_inches="tight")
            page.heading("ROC curve").figure(fig, "ROC on this table")
        fig = figures.likelihood_histogram(p[keep], y[keep].astype(int), m["threshold"])
        fig.savefig(out / "figures" / "likelihood_histogram.png", dpi=110, bbox_inches="tight")
        page.heading("Likelihood per class (paper Fig. 3c–f)").figure(fig, "predicted likelihoods by true class")
    if history is not None and len(history):
        fig = figures.learning_curves(history)
        fig.savefig(out / "figures" / "learning_curves.png", dpi=110, bbox_inches="tight")
        page.heading("Learning curves (paper Fig. 3a–b)").figure(fig, "per-epoch loss and accuracy")
    page.json_block(result)
    page.write(out / "evaluate.html")


def test_run(run_dir, table, *, ensemble: int | None = None, workers: int = 1) -> dict:
    """Test-set metrics of a voxel training run, from its model file and its ``split.csv``.

    The test crystals are read from ``table`` (the table the run was trained on) with the run's
    own id and structure columns and predicted through the model file as any user would: the
    sampler stored in the file, rotations keyed on the crystal ids.

    Args:
        run_dir: a folder written by :func:`cosynth.training.voxel.train_voxel`.
        table: the training table (file or DataFrame).
        ensemble: rotations per crystal (default: the run's ``test_ensemble``).
        workers: image-building processes (no effect on results).

    Returns:
        The run's metrics with the test metrics added; also written to ``metrics.json``, to the
        model file's metrics and, per crystal, to ``test_predictions.csv``.
    """
    import json

    from cosynth.io import iter_crystals
    from cosynth.io.files import atomic_write_json, read_table, write_table
    from cosynth.models.registry import load_model, save_model
    from cosynth.predict import predict

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    ensemble = ensemble or int(config.get("test_ensemble", 20))
    split = read_table(run_dir / "split.csv", text_columns=("id",))
    test = split[split["split"] == "test"]
    frame = table if isinstance(table, pd.DataFrame) else read_table(table)
    wanted = set(test["id"])
    structures = []
    for record in iter_crystals(frame, id_column=config.get("id_column"),
                                structure_column=config.get("structure_column")):
        if record.id in wanted and record.ok:
            record.structure.properties = {**(record.structure.properties or {}), "id": record.id}
            structures.append(record.structure)
    loaded = load_model(run_dir / "model.pt")
    result = predict(structures, loaded, ensemble=ensemble, seed=int(config.get("seed", 0)), workers=workers)
    pred = result.crystals.set_index("id").reindex(test["id"])
    labels = test["label"].to_numpy(int)
    test_pred = pd.DataFrame({"id": test["id"].to_numpy(), "label": labels,
                              **{k: pred[k].to_numpy() for k in ("likelihood", "std", "consistent")}})
    write_table(test_pred, run_dir / "test_predictions.csv")
    metrics = {**json.loads((run_dir / "metrics.json").read_text()),
               **binary_metrics(labels, pred["likelihood"].to_numpy(float)), "test_ensemble": ensemble}
    atomic_write_json(run_dir / "metrics.json", metrics)
    save_model(loaded.network, run_dir / "model.pt", {**loaded.meta, "metrics": metrics})
    return metrics
