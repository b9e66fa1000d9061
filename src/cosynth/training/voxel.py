"""Training the voxel CNN on Lightning: a fresh random rotation per crystal per epoch, BCE, Adam.

Determinism and resumability come from keying every random choice on (seed, epoch): the
rotation of a crystal in an epoch depends on (seed, crystal id, epoch), the shuffling of an
epoch on (seed, epoch), and the weights' initialisation on the seed. A run killed at any point
resumes from ``checkpoints/last.ckpt`` (written at every epoch end) and ends with the same
weights as an uninterrupted run. On several processes (``devices``, see :mod:`.parallel`) each
step's global batch is the one a single process takes, so the weights agree with a one-process
run up to floating-point summation order.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from cosynth.data.splits import stratified_split
from cosynth.io import iter_crystals
from cosynth.io.files import read_table, write_table
from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN
from cosynth.models.voxel_cnn.precision import resolve_precision
from cosynth.represent.voxel import CrystalImager, crystal_rng, sample_rotations
from cosynth.training.parallel import (
    ShardedBatches,
    check_parallel,
    main_process,
    trainer_parallelism,
    unpad,
    weighted_mean_loss,
)
from cosynth.training.run import EpochShuffle, RunDirectory, epoch_history, quiet_lightning, run_checkpoints

VALIDATION_EPOCH_KEY = 1_000_000  # validation rotations are fixed: they use this "epoch"


@dataclass
class TrainConfig:
    label: str
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    epochs: int = 50
    seed: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    sampler: str = "haar"
    hidden_activation: str = "none"
    max_minutes: float | None = None
    id_column: str | None = None
    structure_column: str | None = None
    test_ensemble: int = 20
    # Per-row loss weights (e.g. from `cosynth mitigate reweight`): bias mitigation by importance
    # weighting. Validation and test metrics stay unweighted.
    weight_column: str | None = None
    # Use the table's own train/val/test column (e.g. from `cosynth data build`) instead of a
    # fresh stratified split, so other tools can evaluate on exactly the same test rows.
    split_column: str | None = None
    # Arithmetic of blocks 2-3 and the head: auto = bf16 where the hardware has native bf16 matrix
    # units (AMX, CUDA), else fp32; the master weights stay fp32 either way.
    precision: str = "auto"
    # Processes (Lightning DDP on CPU, gloo); batch_size stays the global batch.
    devices: int = 1
    strategy: str = "auto"


# ---- data -----------------------------------------------------------------------------------
def load_labelled(table, label: str, *, id_column=None, structure_column=None):
    """(ids, structures, labels, errors) from a table with a structure column and a 0/1 label.

    Rows whose structure fails validation or whose label is missing/not 0/1 are reported in
    ``errors`` (id → message) and left out; nothing else stops the load.
    """
    ids, structures, labels, _, errors = load_weighted(table, label, id_column=id_column,
                                                       structure_column=structure_column)
    return ids, structures, labels, errors


def load_weighted(table, label: str, *, weight_column=None, id_column=None, structure_column=None):
    """:func:`load_labelled` plus per-row weights from ``weight_column`` (ones without it);
    a missing, negative or non-finite weight is that row's error."""
    return _load_rows(_read_table(table), label, weight_column, id_column, structure_column)[:5]


def _load_rows(df: pd.DataFrame, label, weight_column, id_column, structure_column):
    """:func:`load_weighted`'s result plus the positions of the kept rows in ``df``."""
    for col, what in ((label, "label"), (weight_column, "weight")):
        if col is not None and col not in df.columns:
            raise ValueError(f"{what} column {col!r} not in the table (columns: {', '.join(map(str, df.columns))})")
    ids, structures, labels, weights, errors, positions = [], [], [], [], {}, []
    records = iter_crystals(df, id_column=id_column, structure_column=structure_column)
    for pos, ((_, row), rec) in enumerate(zip(df.iterrows(), records)):
        y = pd.to_numeric(pd.Series([row[label]]), errors="coerce").iloc[0]
        w = 1.0 if weight_column is None else pd.to_numeric(pd.Series([row[weight_column]]), errors="coerce").iloc[0]
        if not rec.ok:
            errors[rec.id] = rec.error
        elif pd.isna(y) or y not in (0, 1):
            errors[rec.id] = f"label {row[label]!r} in column {label!r} is not 0 or 1"
        elif not np.isfinite(w) or w < 0:
            errors[rec.id] = f"weight {row[weight_column]!r} in column {weight_column!r} is not a finite number ≥ 0"
        else:
            ids.append(rec.id)
            structures.append(rec.structure)
            labels.append(int(y))
            weights.append(float(w))
            positions.append(pos)
    return (ids, structures, np.asarray(labels, dtype=np.int64), np.asarray(weights, dtype=np.float32), errors,
            np.asarray(positions, dtype=np.int64))


def _table_split(df: pd.DataFrame, column: str, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Train/val/test indices (into the kept rows) from a split column of the table."""
    if column not in df.columns:
        raise ValueError(f"split column {column!r} not in the table (columns: {', '.join(map(str, df.columns))})")
    names = df[column].astype(str).str.strip().str.lower().to_numpy()[positions]
    aliases = {"validation": "val", "valid": "val"}
    names = np.array([aliases.get(n, n) for n in names], dtype=object)
    unknown = sorted(set(names) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"split column {column!r} has values {unknown}; expected train, val (or validation), test")
    parts = {name: np.flatnonzero(names == name) for name in ("train", "val", "test")}
    empty = [name for name, idx in parts.items() if len(idx) == 0]
    if empty:
        raise ValueError(f"split column {column!r} leaves no valid rows in {', '.join(empty)}")
    return parts


def _read_table(table) -> pd.DataFrame:
    return table if isinstance(table, pd.DataFrame) else read_table(table)


class RotatedCrystals(Dataset):
    """One image per crystal; its rotation is drawn from (seed, id, epoch), whatever the process.

    A negative index (:func:`~cosynth.training.parallel.pad_index`) is a zero-weight copy.
    """

    def __init__(self, ids, structures, labels, *, seed: int, sampler: str, fixed_epoch: int | None = None,
                 weights=None):
        self.ids, self.labels = list(ids), labels
        self.weights = np.ones(len(self.ids), np.float32) if weights is None else np.asarray(weights, np.float32)
        self.seed, self.sampler, self.fixed_epoch = seed, sampler, fixed_epoch
        self.epoch = 0
        # the periodic tiling is the expensive part of imaging; build it once per crystal
        self.imagers = [CrystalImager.from_structure(s) for s in structures]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        (i,), (pad,) = unpad([i])
        epoch = self.epoch if self.fixed_epoch is None else self.fixed_epoch
        angles = sample_rotations(self.sampler, 1, crystal_rng(self.seed, self.ids[i], epoch))[0]
        return self.imagers[i].image(angles, self.sampler), self.labels[i], 0.0 if pad else self.weights[i], not pad


def collate(items):
    images, labels, weights, real = zip(*items)
    return (SparseBatch.from_images(list(images)), torch.tensor(labels, dtype=torch.float32),
            torch.tensor(weights, dtype=torch.float32), torch.tensor(real, dtype=torch.float32))


# ---- Lightning --------------------------------------------------------------------------------
def _lightning():
    import lightning as L

    class VoxelClassifier(L.LightningModule):
        def __init__(self, hidden_activation: str = "none", lr: float = 1e-3, precision: str = "fp32"):
            super().__init__()
            self.save_hyperparameters()
            self.model = VoxelCNN(hidden_activation=hidden_activation)
            self.model.precision = precision
            self.loss = torch.nn.BCEWithLogitsLoss()

        def _step(self, batch, stage: str):
            images, y, w, real = batch
            logits = self.model(images)
            correct = ((logits > 0).float() == y).float()
            if stage != "train":  # validation is not sharded (see cosynth.training.parallel)
                loss = self.loss(logits, y)
                self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
                self.log(f"{stage}_acc", correct.mean(), on_step=False, on_epoch=True, batch_size=len(y))
                return loss
            # the weighted mean over the global batch; zero-weight copies count in neither part
            per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
            activity = self.model.activity
            loss, shown, (n, n_correct, *active) = weighted_mean_loss(
                per_row, w, real.sum(), (correct * real).sum(), *(share * real.sum() for share in activity.values()))
            n_rows = max(int(n), 1)
            self.log("train_loss", shown, on_step=False, on_epoch=True, batch_size=n_rows)
            self.log("train_acc", n_correct / n_rows, on_step=False, on_epoch=True, batch_size=n_rows)
            for layer, total in zip(activity, active):
                self.log(f"active_{layer}", total / n_rows, on_step=False, on_epoch=True, batch_size=n_rows)
            return loss

        def training_step(self, batch, _):
            return self._step(batch, "train")

        def validation_step(self, batch, _):
            self._step(batch, "val")

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    return L, VoxelClassifier


ACTIVITY_COLUMNS = ("active_conv2", "active_conv3")
DEAD_SHARE = 0.01


def collapse_note(row) -> str | None:
    """A plain warning when the convolutions have died during training (so few ReLUs fire that
    no gradient reaches them: every crystal gets the same score from then on), else None."""
    dead = [c for c in ACTIVITY_COLUMNS if c in row and float(row[c]) < DEAD_SHARE]
    if not dead:
        return None
    shares = ", ".join(f"{c.removeprefix('active_')} {100 * float(row[c]):.2f} %" for c in dead)
    return (f"epoch {int(row['epoch'])}: the network has collapsed ({shares} of ReLUs active): it gives every "
            "crystal the same score and cannot recover; retrain with a lower --lr (e.g. 1e-4)")


def train_voxel(table, run_dir, config: TrainConfig, *, resume: bool = True, progress: bool = True) -> dict:
    """Train a voxel CNN on ``table`` (structures + 0/1 ``config.label``) into ``run_dir``.

    Args:
        table: a table file or DataFrame with a structure column and the label column.
        run_dir: the run directory; re-running it resumes from the last completed epoch, and a
            finished run with the same settings is read, not redone.
        config: the settings.
        resume, progress: continue from ``checkpoints/last.ckpt``; show a progress bar.

    Returns:
        The training metrics (best epoch, epochs run, split sizes, a warning when the network
        collapsed). Test-set metrics come from :func:`cosynth.evaluate.evaluate.test_run`, which
        uses the model file as any user would. None in the extra processes of a multi-process
        run (``config.devices`` > 1): only rank 0 writes files and returns metrics.

    Writes ``split.csv`` (id, label, split), ``skipped.csv``, ``history.csv``,
    ``checkpoints/{best,last}.ckpt``, ``model.pt`` (self-describing, best validation loss, with
    the training data's applicability domain) and ``metrics.json``.
    """
    check_parallel(config.devices, config.strategy)
    L, VoxelClassifier = _lightning()
    table_name = "<in-memory DataFrame>" if isinstance(table, pd.DataFrame) else str(table)
    run = RunDirectory(run_dir, {**asdict(config), "table": table_name}, defaults=asdict(TrainConfig(config.label)))
    if resume and run.finished():
        return run.read_metrics()
    main = main_process()
    ckpt = run.start(resume, write=main)
    frame = _read_table(table)
    ids, structures, labels, weights, errors, positions = _load_rows(
        frame, config.label, config.weight_column, config.id_column, config.structure_column)
    if len(set(labels.tolist())) < 2:
        raise ValueError("training needs both classes (0 and 1) among the valid rows")
    if config.split_column:
        parts = _table_split(frame, config.split_column, positions)
    else:
        parts = stratified_split(labels, config.split, config.seed)
    split_names = np.empty(len(ids), dtype=object)
    for name, idx in parts.items():
        split_names[idx] = name
    if main:
        write_table(pd.DataFrame({"id": ids, "label": labels, "split": split_names}), run.path / "split.csv")
    if errors and main:
        write_table(pd.DataFrame({"id": list(errors), "error": list(errors.values())}), run.path / "skipped.csv")

    def subset(name, fixed_epoch=None):
        idx = parts[name]
        return RotatedCrystals([ids[i] for i in idx], [structures[i] for i in idx], labels[idx],
                               seed=config.seed, sampler=config.sampler, fixed_epoch=fixed_epoch,
                               weights=weights[idx] if name == "train" else None)

    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_ds, val_ds = subset("train"), subset("val", VALIDATION_EPOCH_KEY)
    shuffle = EpochShuffle(len(train_ds), config.seed, salt=7)
    train_dl = DataLoader(train_ds, batch_sampler=ShardedBatches(shuffle, config.batch_size), collate_fn=collate)
    val_dl = DataLoader(val_ds, batch_size=config.batch_size, collate_fn=collate)
    module = VoxelClassifier(hidden_activation=config.hidden_activation, lr=config.lr,
                             precision=resolve_precision(config.precision))
    warned = []

    def warn_on_collapse(row: dict) -> None:
        if (note := collapse_note(row)) and not warned:
            warned.append(note)
            warnings.warn(note, stacklevel=1)

    trainer = L.Trainer(
        **trainer_parallelism(config.devices, config.strategy), max_epochs=config.epochs, deterministic=True,
        logger=False,
        callbacks=[*run_checkpoints(run.path, "val_loss"),
                   epoch_history(run.history_path, [train_ds, shuffle], warn_on_collapse)],
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        max_time=None if config.max_minutes is None else {"minutes": config.max_minutes},
        default_root_dir=run.path,
    )
    trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt)
    if not trainer.is_global_zero:
        return None
    return finalize_run(run, config, table_name, ids, structures, parts)


def finalize_run(run: RunDirectory, config: TrainConfig, table: str, ids, structures, parts) -> dict:
    """Export the best checkpoint as a self-describing model file with the training metrics."""
    from cosynth.models.domain import training_domain
    from cosynth.models.registry import save_model

    _, VoxelClassifier = _lightning()
    module = VoxelClassifier.load_from_checkpoint(run.best_checkpoint, map_location="cpu")
    model = module.model.eval()
    trained_in = model.precision
    model.precision = "fp32"  # the training domain's latent features are fp32, like predictions by default
    hist = run.history()
    metrics = {"n_train": int(len(parts["train"])), "n_val": int(len(parts["val"])), "n_test": int(len(parts["test"])),
               "best_epoch": int(hist.loc[hist.val_loss.idxmin(), "epoch"]), "epochs_run": int(len(hist))}
    metrics["finished"] = metrics["epochs_run"] >= config.epochs  # False: stopped by max_minutes, resumable
    if note := collapse_note(hist.iloc[-1]):
        metrics["warning"] = note
    provenance = {"trained_by": "cosynth train voxel", "table": table, "config": {**asdict(config)},
                  **{k: metrics[k] for k in ("n_train", "n_val", "n_test")}}
    train_idx = parts["train"]
    domain = training_domain(model, [ids[i] for i in train_idx], [structures[i] for i in train_idx],
                             sampler=config.sampler, seed=config.seed)
    save_model(model, run.path / "model.pt", {"sampler": config.sampler, "task": "classification", "precision": trained_in,
                                              "provenance": provenance, "metrics": metrics, "domain": domain})
    run.write_metrics(metrics)
    return metrics
