"""Rotational-ensemble probabilities with image building overlapped with the CNN.

A producer thread images the next crystals (tiling + all E rotations in one batched call,
:meth:`CrystalImager.images`) while the calling thread runs the CNN on the current one. The
compiled imaging and block-1 kernels release the GIL, so both run at once. Results are the
same numbers as the sequential loop: rotations depend only on (seed, crystal id), and the CNN
always sees fixed chunks of ``chunk`` rotations of one crystal.

    for rec_id, angles, probs, error in iter_probabilities(records, model, ensemble=100):
        ...
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cosynth.io.errors import describe_error
from cosynth.io.validate import CrystalValidationError
from cosynth.models.voxel_cnn.model import SparseBatch, VoxelCNN
from cosynth.represent.voxel import CrystalImager, SparseImage, crystal_rng, sample_rotations

EVAL_CHUNK = 8  # rotations of one crystal per CNN call; fixed so results never depend on batching


@dataclass
class CrystalImages:
    """One crystal's images (or the reason there are none)."""

    id: str
    angles: np.ndarray | None
    images: list[SparseImage] | None
    error: str | None


def crystal_images(record, *, ensemble: int = 100, seed: int = 0, sampler: str = "haar",
                   rotations: np.ndarray | None = None, parallel: bool = True) -> CrystalImages:
    """Images of one :class:`~cosynth.io.CrystalRecord` at its E rotations; errors are returned.

    Rotations are ``rotations`` if given, else ``sample_rotations(sampler, ensemble,
    crystal_rng(seed, record.id))``. The imager is :meth:`CrystalImager.from_record` (XIE-SPP
    positioning of CIF input in ``xiespp`` mode).
    """
    if not record.ok:
        return CrystalImages(record.id, None, None, record.error)
    try:
        imager = CrystalImager.from_record(record, sampler)
        angles = rotations if rotations is not None else sample_rotations(sampler, ensemble,
                                                                          crystal_rng(seed, record.id))
        images = imager.images(angles, sampler, parallel=parallel)
    except CrystalValidationError as err:
        return CrystalImages(record.id, None, None, str(err))
    except Exception as err:  # noqa: BLE001 - any failure is this crystal's, not the batch's
        return CrystalImages(record.id, None, None, describe_error(err, "structure"))
    return CrystalImages(record.id, np.asarray(angles, dtype=np.float64), images, None)


def image_probabilities(model: VoxelCNN, images: list[SparseImage], chunk: int = EVAL_CHUNK) -> np.ndarray:
    """sigmoid(logit) of each image (float64), ``chunk`` images per CNN call, in ``model.precision``."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), chunk):
            batch = SparseBatch.from_images(images[start : start + chunk])
            out.append(torch.sigmoid(model(batch)).float().cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros(0)


_DONE = object()


def iter_crystal_images(records: Iterable, *, prefetch: int = 2, **kw) -> Iterator[CrystalImages]:
    """:func:`crystal_images` of each record, in order, built by a background thread that keeps at
    most ``prefetch`` crystals ready ahead of the consumer (``prefetch=0``: no thread).

    The thread images serially (one core): the consumer's CNN has the others, and a serial
    kernel is safe under any numba threading layer."""
    if prefetch <= 0:
        for record in records:
            yield crystal_images(record, **kw)
        return
    kw = {**kw, "parallel": False}  # the calling thread's CNN uses the cores; image on one
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce():
        try:
            for record in records:
                if stop.is_set():
                    return
                q.put(crystal_images(record, **kw))
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="cosynth-imaging", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


Probabilities = tuple[str, "np.ndarray | None", "np.ndarray | None", "str | None"]


def iter_probabilities(records: Iterable, model: VoxelCNN, *, ensemble: int = 100, seed: int = 0,
                       sampler: str = "haar", rotations: np.ndarray | None = None, prefetch: int = 2,
                       chunk: int = EVAL_CHUNK) -> Iterator[Probabilities]:
    """Yield ``(id, angles (E, 3), probabilities (E,), error)`` per record, in input order.

    Images of the next crystals are built in a background thread while the CNN runs
    (``prefetch`` crystals ahead; 0 = sequential). The model runs as it is set up: call
    ``model.eval()`` and ``model.set_precision(...)`` first. Bad crystals give ``(id, None,
    None, message)``.
    """
    for item in iter_crystal_images(records, prefetch=prefetch, ensemble=ensemble, seed=seed, sampler=sampler,
                                    rotations=rotations):
        if item.error is not None:
            yield item.id, None, None, item.error
            continue
        yield item.id, item.angles, image_probabilities(model, item.images, chunk), None
