"""``cosynth screen``: predictions for millions of crystals on a Ray cluster, resumable shard by shard.

The pipeline (Ray Data, streaming):

1. **plan** (driver): big tables (CSV, Parquet, JSON lines given by name) are read once in
   bounded chunks and their rows sorted into per-shard Parquet files under ``OUT/inputs``, so a
   task reads only its own rows; files, folders and globs stay as they are;
2. **parse** (one CPU task per shard): :func:`cosynth.io.iter_crystals` of that shard, exactly
   the records ``cosynth predict INPUTS --shard i/N`` reads (shards are chosen by crystal id);
3. **predict** (an actor pool; the model is loaded once per actor): :func:`cosynth.predict.predict_records`,
   the code behind ``cosynth predict``; every crystal's numbers depend only on the crystal,
   the model and the seed, never on its shard, batch or actor;
4. **write** (driver): a shard's rows go to ``OUT/rows/shard=NNNNN/part.parquet`` atomically as
   soon as all of them are in, and ``OUT/manifest.json`` records it. A rerun skips finished shards.

Bad input stays a row with its error. A killed worker's batches are retried on a restarted actor
(Ray), so no row is lost; a killed driver loses at most the shards not yet written. ``OUT`` and
the inputs must be on a file system every node sees.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from cosynth.io.crystals import TableRows, iter_crystals, table_chunks, table_row_ids
from cosynth.io.files import atomic_write, atomic_write_json, table_kind
from cosynth.io.shards import shard_of

__all__ = ["ScreenOptions", "ScreenSummary", "read_screen", "screen"]

MANIFEST = "manifest.json"
FORMAT = "cosynth-screen/1"
ROW_NUMBER = "__row__"  # staged table rows keep their row number in the input file
PARSE_CPUS = 1  # CPUs of each parse task
TABLE_CHUNK = 50_000  # rows of an input table held in memory at once while staging
TYPES = {"id": "string", "formula": "string", "modality": "string", "likelihood": "float64", "std": "float64",
         "n_rotations": "Int64", "consistent": "boolean", "label": "Int64", "status": "string", "error": "string",
         "source": "string", "prediction": "float64", "composition_weight": "float64"}


@dataclass(frozen=True)
class ScreenOptions:
    """What decides the numbers of a screen (a rerun in the same folder must use the same)."""

    model: str
    ensemble: int = 100
    seed: int = 0
    sampler: str | None = None
    threshold: float | None = None
    precision: str = "auto"
    resolve_disorder: str = "error"
    id_column: str | None = None
    structure_column: str | None = None
    formula_column: str | None = None


@dataclass
class ScreenSummary:
    """What a screen did: shards and rows of this run and in total, throughput, where the rows are."""

    out: str
    shards: int
    shards_done_before: int
    shards_run: int
    rows: int
    errors: int
    rows_this_run: int
    seconds: float
    rows_per_second: float
    per_shard: dict = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary printed at the end of ``cosynth screen``."""
        return (f"screened {self.rows} crystals in {self.shards} shards ({self.errors} errors) → {self.out}; this run: "
                f"{self.shards_run} shards, {self.rows_this_run} rows in {self.seconds:.1f} s "
                f"({self.rows_per_second:.2f} rows/s); {self.shards_done_before} shards were already done")


def screen(inputs: Iterable[str] | str, out, options: ScreenOptions, *, shards: int = 16, ray_address: str = "local",
           actors: int | None = None, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
           batch_size: int = 8, progress: bool = False) -> ScreenSummary:
    """Predict every crystal of ``inputs`` with a Ray Data pipeline into the Parquet dataset ``out/rows``.

    Args:
        inputs: files, folders, globs and tables (CSV/Parquet/JSON lines with a structure or formula column).
        out: the output folder; a rerun with the same inputs and options skips the finished shards.
        options: model and prediction settings (as for :func:`cosynth.predict.predict`).
        shards: N; crystal ``c`` is in shard ``shard_of(id(c), N)``, the partition of ``predict --shard``.
        ray_address: ``local`` starts Ray on this machine unless one is running; else a cluster address.
        actors: predicting actors (default: the cluster's CPUs but one, which parses, / ``cpus_per_actor``).
        cpus_per_actor, gpus_per_actor: resources of each actor (its torch threads: the CPUs).
        batch_size: crystals per actor call (small: a killed actor retries little).
        progress: a progress bar over shards on stderr.

    Returns:
        The :class:`ScreenSummary` (also written into ``out/manifest.json``).
    """
    try:
        import ray
    except ImportError as err:  # pragma: no cover - exercised only without ray
        raise ImportError("cosynth screen needs Ray: pip install 'cosynth[ray]'") from err

    inputs = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs]
    if not inputs:
        raise ValueError("screen needs at least one input")
    if shards < 1 or batch_size < 1 or cpus_per_actor <= 0 or gpus_per_actor < 0:
        raise ValueError("shards and batch_size must be at least 1, cpus_per_actor above 0, gpus_per_actor >= 0")
    out = Path(out)
    manifest = _open_manifest(out, inputs, options, shards)
    started_ray = False
    if not ray.is_initialized():
        kw = {} if ray_address == "local" else {"address": ray_address}
        ray.init(include_dashboard=False, log_to_driver=False, **kw)
        started_ray = True
    try:
        return _run(inputs, out, options, manifest, shards, actors, cpus_per_actor, gpus_per_actor, batch_size,
                    progress)
    finally:
        if started_ray:
            ray.shutdown()


def read_screen(out) -> pd.DataFrame:
    """All rows of a screen (finished shards), with their ``shard`` column, in shard order."""
    parts = sorted(Path(out, "rows").glob("shard=*/part.parquet"))
    frames = [pd.read_parquet(p).assign(shard=int(p.parent.name.split("=")[1])) for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- plan


def _fingerprint(inputs: list[str], options: ScreenOptions, shards: int) -> str:
    """What decides a screen's rows: the model file's bytes, the inputs (files with their size and
    modification time), the options and the shard count."""
    from cosynth.models.registry import resolve_model_path

    model = hashlib.blake2b(resolve_model_path(options.model).read_bytes(), digest_size=16).hexdigest()

    def stamp(item: str):
        if not os.path.isfile(item):
            return os.path.abspath(item) if os.path.exists(item) else item
        info = os.stat(item)
        return [os.path.abspath(item), info.st_size, info.st_mtime_ns]

    text = json.dumps({"inputs": [stamp(i) for i in inputs], "options": {**asdict(options), "model": model},
                       "shards": shards}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _open_manifest(out: Path, inputs: list[str], options: ScreenOptions, shards: int) -> dict:
    """The folder's manifest: a new one, or the previous run's when inputs and options are the same."""
    key = _fingerprint(inputs, options, shards)
    path = out / MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text())
        if manifest.get("fingerprint") != key:
            raise ValueError(f"{out} holds a screen of other inputs, options or shard count "
                             f"(see {path}); give another output folder")
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "fingerprint": key, "inputs": inputs, "options": asdict(options),
                "shards": shards, "done": {}, "runs": []}
    atomic_write_json(path, manifest)
    return manifest


def _is_table(item: str) -> bool:
    try:
        return Path(item).is_file() and table_kind(Path(item)) in ("csv", "parquet", "jsonl")
    except ValueError:
        return False


def _stage_tables(inputs: list[str], out: Path, options: ScreenOptions, shards: int) -> dict[int, Path]:
    """Sort the rows of every input table into ``out/inputs/K/SHARD-CHUNK.parquet`` (once; resumable).

    Returns {input index: its folder}; a table that cannot be read is left to the parse tasks,
    which give it its error row as ``cosynth predict`` does.
    """
    staged = {}
    columns = {"id_column": options.id_column, "structure_column": options.structure_column,
               "formula_column": options.formula_column}
    for k, item in enumerate(inputs):
        if not _is_table(item):
            continue
        folder = out / "inputs" / f"{k:03d}"
        if not (folder / "DONE").exists():
            if not _stage_one(item, folder, shards, columns):
                shutil.rmtree(folder, ignore_errors=True)
                continue
        staged[k] = folder
    return staged


def _stage_one(path: str, folder: Path, shards: int, columns: dict) -> bool:
    """Stage one table; False when it cannot be read (a usage error, such as no structure or
    formula column, raises ValueError before any work)."""
    chunks = table_chunks(path, TABLE_CHUNK)
    for c in itertools.count():
        try:
            start, frame = next(chunks)
        except StopIteration:
            break
        except Exception:  # noqa: BLE001 - unreadable: the parse tasks report it in words, as predict does
            return False
        numbers = list(range(start, start + len(frame)))
        ids = table_row_ids(frame, path, numbers, **columns)
        frame = frame.assign(**{ROW_NUMBER: numbers})
        owner = pd.Series([shard_of(i, shards) for i in ids], index=frame.index)
        for s, rows in frame.groupby(owner, sort=True):
            atomic_write(folder / f"{s:05d}-{c:05d}.parquet", lambda tmp, rows=rows: rows.to_parquet(tmp, index=False))
    atomic_write(folder / "DONE", lambda tmp: tmp.write_text("staged\n"))
    return True


def _shard_items(inputs: list[str], staged: dict[int, str], shard: int) -> list:
    """The inputs of one shard: staged tables become their rows of this shard."""
    items = []
    for k, item in enumerate(inputs):
        if k not in staged:
            items.append(item)
            continue
        parts = sorted(Path(staged[k]).glob(f"{shard:05d}-*.parquet"))
        if parts:
            frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
            numbers = frame.pop(ROW_NUMBER).tolist()
            items.append(TableRows(frame, item, numbers))
    return items


# ----------------------------------------------------------------------------- Ray stages


def _parse_shard(row: dict, inputs, staged, shards, options: ScreenOptions, max_extent: float | None) -> list[dict]:
    """Ray task: the records of one shard, pickled, each with its position and the shard's count
    (``max_extent``: the model's image box, :func:`cosynth.predict.image_box_limit`)."""
    shard, o = int(row["shard"]), options
    records = list(iter_crystals(_shard_items(inputs, staged, shard), shard=(shard, shards),
                                 resolve_disorder=o.resolve_disorder, id_column=o.id_column,
                                 structure_column=o.structure_column, formula_column=o.formula_column,
                                 max_extent=max_extent))
    if not records:  # an empty shard still reports in, so that it is written and not waited for
        return [{"shard": shard, "position": -1, "count": 0, "payload": b""}]
    return [{"shard": shard, "position": j, "count": len(records), "payload": pickle.dumps(r)}
            for j, r in enumerate(records)]


class _Predictor:
    """Ray actor: the model, loaded once; each call predicts a batch of records."""

    def __init__(self, options: ScreenOptions, cpus: float, gpus: float):
        import torch

        from cosynth.models.registry import load_model

        torch.set_num_threads(max(1, int(cpus)))
        self.options = options
        self.model = load_model(options.model)
        if gpus > 0 and self.model.family == "voxel_cnn" and torch.cuda.is_available():
            self.model.network.to("cuda")  # the CNN (the costly part) on the actor's GPU; imaging stays on CPU

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from cosynth.predict import predict_records

        real = batch["position"].to_numpy() >= 0
        records = [pickle.loads(p) for p in batch["payload"][real]]
        o = self.options
        result = predict_records(records, self.model, ensemble=o.ensemble, seed=o.seed, sampler=o.sampler,
                                 threshold=o.threshold, precision=o.precision)
        if result.partial:
            raise RuntimeError("prediction interrupted")
        rows = iter(result.crystals.to_dict("records"))
        payload = [pickle.dumps(next(rows)) if keep else b"" for keep in real]
        return batch[["shard", "position", "count"]].assign(payload=payload)


def _run(inputs, out: Path, options: ScreenOptions, manifest: dict, shards: int, actors, cpus_per_actor,
         gpus_per_actor, batch_size, progress) -> ScreenSummary:
    import ray

    from cosynth.models.registry import load_model
    from cosynth.predict import image_box_limit

    start = time.perf_counter()
    done_before = _finished_shards(out, manifest)
    todo = [s for s in range(shards) if s not in done_before]
    staged = {k: str(v) for k, v in _stage_tables(inputs, out, options, shards).items()}
    cpus = ray.cluster_resources().get("CPU", 1)
    if actors is None:  # one CPU stays free for the parse tasks, or the actors would starve them
        actors = max(1, int((cpus - PARSE_CPUS) // cpus_per_actor))
    if actors * cpus_per_actor + PARSE_CPUS > cpus:
        raise ValueError(f"{actors} actors × {cpus_per_actor} CPUs plus {PARSE_CPUS} CPU for parsing need "
                         f"{actors * cpus_per_actor + PARSE_CPUS:g} CPUs; the Ray cluster has {cpus:g}")
    rows_this_run = 0
    if todo:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
        # Ray Data retries failed tasks and restarts dead actors, retrying their batches, by default
        max_extent = image_box_limit(load_model(options.model))
        ds = ds.flat_map(_parse_shard, fn_args=(inputs, staged, shards, options, max_extent), num_cpus=PARSE_CPUS)
        ds = ds.map_batches(_Predictor, fn_constructor_args=(options, cpus_per_actor, gpus_per_actor),
                            batch_size=batch_size,
                            batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)
        bar = _bar(progress, len(todo))
        pending: dict[int, dict[int, bytes]] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for shard, position, count, payload in batch[["shard", "position", "count", "payload"]].itertuples(
                    index=False):
                got = pending.setdefault(int(shard), {})
                if position >= 0:
                    got[int(position)] = payload
                if len(got) == count:
                    rows = [pickle.loads(got[j]) for j in range(count)]
                    manifest["done"][str(shard)] = _write_shard(out, int(shard), rows)
                    atomic_write_json(out / MANIFEST, manifest)
                    rows_this_run += count
                    del pending[int(shard)]
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(rows=rows_this_run)
        if bar is not None:
            bar.close()
        if pending:
            raise RuntimeError(f"shards {sorted(pending)} did not receive all their rows")
    seconds = time.perf_counter() - start
    done = manifest["done"]
    summary = ScreenSummary(out=str(out), shards=shards, shards_done_before=len(done_before), shards_run=len(todo),
                            rows=sum(d["rows"] for d in done.values()), errors=sum(d["errors"] for d in done.values()),
                            rows_this_run=rows_this_run, seconds=round(seconds, 2),
                            rows_per_second=round(rows_this_run / seconds, 3) if seconds > 0 else 0.0)
    manifest["runs"].append({"shards_run": len(todo), "rows": rows_this_run, "seconds": summary.seconds,
                             "actors": actors, "cpus_per_actor": cpus_per_actor, "gpus_per_actor": gpus_per_actor,
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    manifest["summary"] = {k: v for k, v in asdict(summary).items() if k != "per_shard"}
    atomic_write_json(out / MANIFEST, manifest)
    summary.per_shard = done
    return summary


def _finished_shards(out: Path, manifest: dict) -> set[int]:
    """Shards whose rows are on disk (the part file is written atomically, so present means whole)."""
    done = set()
    for part in Path(out, "rows").glob("shard=*/part.parquet"):
        shard = int(part.parent.name.split("=")[1])
        if str(shard) not in manifest["done"]:  # written just before an interruption: count it in
            frame = pd.read_parquet(part, columns=["status"])
            manifest["done"][str(shard)] = {"rows": len(frame), "errors": int((frame["status"] != "ok").sum())}
        done.add(shard)
    return done


def _write_shard(out: Path, shard: int, rows: list[dict]) -> dict:
    """One shard's rows as ``rows/shard=NNNNN/part.parquet`` (atomic), with fixed column types."""
    from cosynth.predict import COLUMNS

    columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else COLUMNS
    frame = pd.DataFrame(rows, columns=columns)
    for col in frame.columns:
        if col in TYPES:
            frame[col] = frame[col].astype(TYPES[col])
    atomic_write(out / "rows" / f"shard={shard:05d}" / "part.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    return {"rows": len(frame), "errors": int((frame["status"] != "ok").sum()) if len(frame) else 0}


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="screen", unit="shard", file=sys.stderr)
