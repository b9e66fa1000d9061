"""Training Roost, de-CGCNN and COSNet on Lightning with the COSNet reference defaults.

Targets are divided by the training standard deviation (no centring, so a non-negative target
stays non-negative for the optional ReLU output); MSE loss, Adamax (lr 1e-2, weight decay 1e-1),
exponential decay 0.96 per epoch, batch 128, and the epoch with the lowest validation MAE is
kept. Binary targets use BCE on logits and keep the epoch with the lowest validation loss. A binary
target may come with auxiliary regression targets (the frames' ``aux`` column, NaN where unknown):
extra outputs learnt beside the label where known (weight ``aux_weight``), so that the shared
representation has to carry them too (e.g. the energy above the hull); they never enter the
validation loss that chooses the epoch, and predictions keep the label's output only.

A run directory holds ``config.json``, ``problems.csv`` (rows skipped or whose structure was
ignored), ``history.csv``, ``checkpoints/{best,last}.ckpt``, ``model.pt`` (self-describing: the
file alone rebuilds the model), ``predictions.csv`` (validation and test rows),
``representations.npz`` (C and volume per atom) and ``metrics.json``. Everything random is keyed on
the seed (initialisation) and on (seed, epoch) (shuffling), so re-running a killed run resumes
from ``last.ckpt`` and ends with the same weights as an uninterrupted run. The modal-availability
augmentation is deterministic (structure-less copies, no random masking), so several processes
(``devices``, see :mod:`.parallel`) train on the same global batches as one and agree with it up
to floating-point summation order.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cosynth.io.files import write_table
from cosynth.models.bimodal_data import (
    MODES,
    BimodalDataset,
    BimodalRows,
    apply_mode,
    featurize,
    keep_structure_fraction,
    predict_rows,
)
from cosynth.models.registry import model_class, save_model
from cosynth.represent.composition import DEFAULT_EMBEDDING
from cosynth.represent.graph import GraphCache
from cosynth.training.parallel import (
    ShardedBatches,
    check_parallel,
    main_process,
    trainer_parallelism,
    unpad,
    weighted_mean_loss,
)
from cosynth.training.run import EpochShuffle, RunDirectory, epoch_history, quiet_lightning, run_checkpoints

FAMILIES = ("roost", "cgcnn", "cosnet")
TASKS = ("regression", "classification")


@dataclass
class FitConfig:
    model: str = "cosnet"  # roost | cgcnn | cosnet
    mode: str = "bimodal_aug"  # composition | bimodal | bimodal_aug (COSNet only)
    task: str = "regression"  # regression | classification (0/1 target)
    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-1
    lr_decay: float = 0.96
    batch_size: int = 128
    seed: int = 0
    embedding: str = DEFAULT_EMBEDDING
    concat: bool = False
    scalar_weight: bool = True
    nonneg: bool | None = None  # None: ReLU output when every training target is ≥ 0 (regression)
    aux_weight: float = 1.0  # classification: weight of the auxiliary targets' squared error
    structure_fraction: float = 1.0  # share of rows with a structure that keep it
    structure_fraction_splits: str = "train"  # "train" or "all": where structure_fraction applies
    max_minutes: float | None = None
    threads: int | None = None
    devices: int = 1  # processes (Lightning DDP on CPU, gloo); batch_size stays the global batch
    strategy: str = "auto"
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.model not in FAMILIES:
            raise ValueError(f"model must be one of {', '.join(FAMILIES)}, not {self.model!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if not 0.0 <= self.structure_fraction <= 1.0:
            raise ValueError("structure_fraction must be within [0, 1]")
        check_parallel(self.devices, self.strategy)


# ---- model construction and self-describing files ---------------------------------------------
def build_model(family: str, params: dict) -> torch.nn.Module:
    return model_class(family).from_config(params)


def model_params(config: FitConfig, nonneg: bool, n_targets: int = 1) -> dict:
    p = {"embedding": config.embedding, "nonneg": nonneg}
    if n_targets > 1:
        p["n_targets"] = n_targets
    if config.model == "cosnet":
        p.update(concat=config.concat, scalar_weight=config.scalar_weight)
    return p


# ---- data ---------------------------------------------------------------------------------------
def prepare(splits: dict[str, pd.DataFrame], config: FitConfig, cache: GraphCache | None = None,
            progress: bool = False) -> tuple[dict[str, BimodalRows], dict[str, BimodalRows], pd.DataFrame]:
    """(rows as in the data, rows as the model sees them, problems) for train/val/test."""
    cache = cache or GraphCache()
    raw, seen, problems = {}, {}, []
    for name in ("train", "val", "test"):
        frame = splits[name]
        if "aux" in frame and config.task != "classification":
            raise ValueError("auxiliary targets (an aux column) go with a classification task only")
        if config.model == "roost":
            frame = frame.assign(cif=None)
        rows, prob = featurize(frame, embedding=config.embedding, cache=cache, split=name, progress=progress)
        problems.append(prob)
        if config.model == "cgcnn":
            lacking = np.flatnonzero(~rows.has_structure)
            if len(lacking):
                problems.append(pd.DataFrame({"id": [rows.ids[i] for i in lacking], "split": name,
                                              "action": "skipped", "error": "no usable structure (CGCNN needs one)"}))
            rows = rows.subset(np.flatnonzero(rows.has_structure))
        if config.task == "classification":
            bad = ~np.isin(rows.targets[:, 0], (0.0, 1.0))
            if bad.any():
                problems.append(pd.DataFrame({"id": [rows.ids[i] for i in np.flatnonzero(bad)], "split": name,
                                              "action": "skipped", "error": "classification target is not 0 or 1"}))
                rows = rows.subset(np.flatnonzero(~bad))
        if len(rows) == 0:
            raise ValueError(f"no usable rows in the {name} split")
        raw[name] = rows
        view = rows
        if config.structure_fraction < 1.0 and (name == "train" or config.structure_fraction_splits == "all"):
            view = keep_structure_fraction(view, config.structure_fraction, config.seed)
            raw[name] = view if name != "train" else raw[name]  # evaluation subsets follow what is kept
        if config.model == "cosnet":
            view = apply_mode(view, config.mode, train=name == "train")
        elif config.model == "roost":
            view = apply_mode(view, "composition", train=False)
        seen[name] = view
    problems = pd.concat(problems, ignore_index=True) if problems else pd.DataFrame()
    return raw, seen, problems


def _loader(ds: BimodalDataset, batch_size: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=ds.collate)


def _train_loader(ds: BimodalDataset, batches: ShardedBatches) -> DataLoader:
    """Training batches; zero-weight copies from :class:`ShardedBatches` get weight 0."""

    def collate(indices):
        rows, pad = unpad(indices)
        batch = ds.collate(rows)
        if any(pad):
            weight = torch.ones(batch.n, 1) if batch.weight is None else batch.weight.clone()
            weight[torch.tensor(pad)] = 0.0
            batch.weight = weight
            batch.real = 1.0 - weight.new_tensor(pad).unsqueeze(1)  # read by the training step
        return batch

    return DataLoader(ds, batch_sampler=batches, collate_fn=collate)


# ---- Lightning ----------------------------------------------------------------------------------
def _lightning():
    import lightning as L

    class BimodalModule(L.LightningModule):
        def __init__(self, family: str, params: dict, scale: float = 1.0, task: str = "regression",
                     lr: float = 1e-2, weight_decay: float = 1e-1, lr_decay: float = 0.96, aux_weight: float = 1.0):
            super().__init__()
            self.save_hyperparameters()
            self.model = build_model(family, params)

        def _step(self, batch, stage: str):
            out = self.model(batch)
            y = batch.target
            w = batch.weight if stage == "train" else None  # validation stays unweighted
            if self.hparams.task == "classification":
                logit, label = out[:, :1], y[:, :1]
                per_row = torch.nn.functional.binary_cross_entropy_with_logits(logit, label, reduction="none")
                if out.shape[1] > 1:  # auxiliary targets, learnt where known
                    known = torch.isfinite(y[:, 1:])
                    squared = torch.where(known, out[:, 1:] - y[:, 1:].nan_to_num(), 0.0) ** 2
                    if stage == "train":
                        per_row = per_row + self.hparams.aux_weight * squared.sum(1, keepdim=True)
                    elif n_known := int(known.sum()):  # the mean over known values; none known: no value
                        self.log(f"{stage}_aux_mse", squared.sum() / n_known, on_step=False, on_epoch=True,
                                 batch_size=n_known)
                name, per_metric = f"{stage}_acc", ((logit > 0).float() == label).float()
            else:
                per_row = (out - y) ** 2
                name, per_metric = f"{stage}_mae", (out - y).abs() * self.hparams.scale
            if stage != "train":  # validation is not sharded (see cosynth.training.parallel)
                self.log(name, per_metric.mean(), on_step=False, on_epoch=True, batch_size=batch.n)
                loss = per_row.mean()
                self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=batch.n)
                return loss
            # the (weighted) mean over the global batch; zero-weight copies count in neither part
            real = getattr(batch, "real", None)
            real = torch.ones_like(per_row) if real is None else real.expand_as(per_row)
            loss, shown, (n, metric) = weighted_mean_loss(per_row, w, real.sum(), (per_metric * real).sum())
            n_rows = max(int(n) // per_row.shape[1], 1)
            self.log(name, metric / n.clamp_min(1), on_step=False, on_epoch=True, batch_size=n_rows)
            self.log(f"{stage}_loss", shown, on_step=False, on_epoch=True, batch_size=n_rows)
            return loss

        def training_step(self, batch, _):
            return self._step(batch, "train")

        def validation_step(self, batch, _):
            self._step(batch, "val")

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            return batch  # CPU training; batches are plain dataclasses

        def configure_optimizers(self):
            opt = torch.optim.Adamax(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.hparams.lr_decay)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    return L, BimodalModule


def fit(splits: dict[str, pd.DataFrame], run_dir, config: FitConfig, *, resume: bool = True,
        cache: GraphCache | None = None, progress: bool = False, verbose: bool = False) -> dict:
    """Train one model on ``splits`` (frames with id, formula, cif, target[, structure_status]).

    Args:
        splits: ``train``, ``val`` and ``test`` frames.
        run_dir: the run directory (see the module docstring for its files).
        config: the settings; a finished run with the same settings is read, not redone.
        resume: continue from ``checkpoints/last.ckpt`` when the settings allow it.
        cache: crystal-graph cache (default: the user cache folder).
        progress, verbose: a progress bar; one line per epoch.

    Returns:
        The test metrics, or ``{"finished": False, "epochs_run": n}`` when ``max_minutes`` stopped it;
        None in the extra processes of a multi-process run (only rank 0 writes and reports).
    """
    config.check()
    run = RunDirectory(run_dir, asdict(config), defaults=asdict(FitConfig()))
    if resume and run.finished():
        return run.read_metrics()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)  # weight decay drives weights towards denormals, which are slow on CPU
    L, BimodalModule = _lightning()
    main = main_process()
    ckpt = run.start(resume, write=main)
    raw, seen, problems = prepare(splits, config, cache=cache, progress=progress and main)
    if main:
        write_table(problems, run.path / "problems.csv")
    if verbose and main and len(problems):
        counts = problems.groupby(["action", "error"]).size().sort_values(ascending=False)
        lines = [f"  {n} {action}: {error}" for (action, error), n in counts.head(5).items()]
        more = f"\n  … and {len(counts) - 5} other reasons" if len(counts) > 5 else ""
        print(f"[{run.path.name}] {len(problems)} rows skipped or without their structure "
              f"(all in {run.path / 'problems.csv'}):\n" + "\n".join(lines) + more, file=sys.stderr, flush=True)

    train_y = seen["train"].target
    if config.task == "regression":
        scale = float(np.std(raw["train"].target)) or 1.0
        nonneg = bool(np.all(train_y >= 0)) if config.nonneg is None else bool(config.nonneg)
    else:
        scale, nonneg = 1.0, False
    params = model_params(config, nonneg, n_targets=raw["train"].targets.shape[1])

    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_ds = BimodalDataset(seen["train"], scale)
    val_ds = BimodalDataset(seen["val"], scale)
    shuffle = EpochShuffle(len(train_ds), config.seed, salt=11)
    module = BimodalModule(config.model, params, scale=scale, task=config.task, lr=config.lr,
                           weight_decay=config.weight_decay, lr_decay=config.lr_decay, aux_weight=config.aux_weight)
    monitor = "val_mae" if config.task == "regression" else "val_loss"

    def show(row: dict) -> None:
        if verbose:  # rank 0 only (see epoch_history)
            shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds", "lr"))
            print(f"[{run.path.name}] epoch {row['epoch']} {shown} ({row['seconds']}s)", flush=True)

    parallel = trainer_parallelism(config.devices, config.strategy, find_unused_parameters=config.model == "cosnet")
    trainer = L.Trainer(**parallel, max_epochs=config.epochs, deterministic=True, logger=False,
                        callbacks=[*run_checkpoints(run.path, monitor), epoch_history(run.history_path, [shuffle], show)],
                        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                        max_time=None if config.max_minutes is None else {"minutes": config.max_minutes},
                        default_root_dir=run.path)
    t0 = time.perf_counter()
    # rows with and without a structure are dealt out separately, so every process runs COSNet's
    # structure branch whenever one does (see ShardedBatches)
    batches = ShardedBatches(shuffle, config.batch_size, kinds=seen["train"].present)
    trainer.fit(module, _train_loader(train_ds, batches), _loader(val_ds, 512), ckpt_path=ckpt)
    if not trainer.is_global_zero:
        return None
    hist = run.history()
    if len(hist) < config.epochs:  # stopped by max_minutes: resumable, not finished
        return {"finished": False, "epochs_run": int(len(hist))}
    return finalize(run, config, splits, raw, seen, scale, time.perf_counter() - t0)


def subset_masks(frame_status: np.ndarray, has_structure: np.ndarray) -> dict[str, np.ndarray]:
    """The row subsets the paper reports, plus what we could actually use offline."""
    status = np.asarray(frame_status)
    return {"all": np.ones(len(status), dtype=bool),
            "without_structure": status == "none",
            "with_structure": status != "none",
            "with_structure_available": has_structure,
            "with_structure_missing_offline": (status != "none") & ~has_structure}


def finalize(run: RunDirectory, config: FitConfig, splits, raw, seen, scale: float, seconds: float) -> dict:
    """Best checkpoint → model.pt; predictions, representations and metrics of val/test."""
    from sklearn.metrics import roc_auc_score

    _, BimodalModule = _lightning()
    module = BimodalModule.load_from_checkpoint(run.best_checkpoint, map_location="cpu")
    model = module.model.eval()
    hist = run.history()
    monitor = "val_mae" if config.task == "regression" else "val_loss"
    metrics = {"best_epoch": int(hist.loc[hist[monitor].idxmin(), "epoch"]), "epochs_run": int(len(hist)),
               "train_seconds": round(seconds, 1), "target_scale": scale,
               "n_train_seen": len(seen["train"]), "n_train_augmented": int(seen["train"].augmented.sum()),
               "n_train_with_structure_seen": int(seen["train"].present.sum())}
    frames, reps = [], {}
    for name in ("val", "test"):
        rows = seen[name]
        res = predict_rows(model, rows, scale)
        status_by_id = dict(zip(splits[name]["id"], splits[name].get("structure_status",
                                                                    pd.Series(["none"] * len(splits[name])))))
        status = np.array([status_by_id.get(i, "none") for i in rows.ids])
        y = rows.targets[:, 0]
        p = res["prediction"].reshape(len(rows), -1)[:, 0]
        frame = pd.DataFrame({"id": rows.ids, "split": name, "formula": rows.formulas, "structure_status": status,
                              "has_structure": raw[name].has_structure if len(raw[name]) == len(rows)
                              else rows.has_structure, "present": rows.present, "target": y})
        if config.task == "classification":
            frame["probability"] = 1 / (1 + np.exp(-p))
        else:
            frame["prediction"] = p
        for k in ("w_c", "w_c_norm"):
            if k in res:
                frame[k] = res[k]
        frames.append(frame)
        for key, mask in subset_masks(status, frame["has_structure"].to_numpy()).items():
            if not mask.any():
                continue
            if config.task == "classification":
                prob = frame["probability"].to_numpy()[mask]
                metrics[f"{name}_accuracy_{key}"] = float(((prob > 0.5) == (y[mask] > 0.5)).mean())
                if len(set(y[mask].tolist())) == 2:
                    metrics[f"{name}_auc_{key}"] = float(roc_auc_score(y[mask], prob))
            else:
                metrics[f"{name}_mae_{key}"] = float(np.abs(p[mask] - y[mask]).mean())
            metrics[f"{name}_n_{key}"] = int(mask.sum())
        if "C" in res:
            reps[f"{name}_C"] = res["C"]
            reps[f"{name}_vpa"] = raw[name].volume_per_atom if len(raw[name]) == len(rows) else rows.volume_per_atom
            reps[f"{name}_ids"] = np.array(rows.ids, dtype=str)
    if config.model != "cgcnn":
        res = predict_rows(model, raw["train"], scale)  # the training rows as they are, no augmentation
        if "C" in res:
            reps["train_C"] = res["C"]
            reps["train_vpa"] = raw["train"].volume_per_atom
            reps["train_ids"] = np.array(raw["train"].ids, dtype=str)
    write_table(pd.concat(frames, ignore_index=True), run.path / "predictions.csv")
    if reps:
        np.savez_compressed(run.path / "representations.npz", **reps)
    save_model(model, run.path / "model.pt", {"task": config.task, "target_scale": scale,
                                             "provenance": {"trained_by": f"cosynth train {config.model}",
                                                            "config": asdict(config)}, "metrics": metrics})
    metrics["finished"] = True
    run.write_metrics(metrics)
    return metrics


def fit_seeds(splits, out_dir, config: FitConfig, seeds=(0, 1, 2, 3, 4), **kwargs) -> pd.DataFrame:
    """``fit`` once per seed into ``out_dir/seed<k>``; finished seeds are read, not re-run.

    None in the extra processes of a multi-process run (every process runs every seed's fit).
    """
    from dataclasses import replace

    rows = []
    for seed in seeds:
        metrics = fit(splits, Path(out_dir) / f"seed{seed}", replace(config, seed=seed), **kwargs)
        rows.append(None if metrics is None else {"seed": seed, **metrics})
    return None if None in rows else pd.DataFrame(rows)
