"""Crystal voxel images (CVR): sparse 128³ images of a 50 Å cube with three chemistry channels.

The periodic tiling of a crystal (its "point cloud" in a cube that holds every atom any rotation
can bring into the image box) is built once per crystal by :class:`CrystalImager` and reused for
every rotation. Two samplers exist:

* ``haar``   – rotations uniform on SO(3), applied as a float32 matrix product (cosynth's own models);
* ``xiespp`` – angle triples (α, β, γ) in degrees rounded to float16 and applied as three float32
  axis rotations in the exact order of the published XIE-SPP code, so its weights give the same
  outputs (see ``shared/reference/xiespp/README.md``).

Images are sparse: occupied voxel indices plus the atomic number of the atom in each voxel; the
channel values come from :func:`channel_table`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit, prange

# ---- constants of the image (see specs/voxel-image.md) -------------------------------------
BOX = 50.0  # Å, edge of the cubic image box
GRID = 128  # voxels per edge
BIG_BOX = float(np.float32(np.sqrt(3 * BOX**2)))  # 86.6025390625 Å, edge of the rotation cube
CENTER = BIG_BOX / 2  # 43.30126953125, common centre of both cubes
OFFSET = CENTER - BOX / 2  # 18.30126953125, start of the image box inside the big cube
# Only points within this distance of the centre can ever land in the image box (its half
# diagonal is exactly CENTER); the margin keeps float32 rounding from dropping a corner atom.
_REACH = CENTER + 0.01

SAMPLERS = ("haar", "sobol", "xiespp")


class VoxelCollisionError(ValueError):
    """Two atoms fell into one voxel: the image would silently lose an atom."""


@lru_cache(maxsize=1)
def channel_table() -> np.ndarray:
    """(119, 3) float32: row Z holds (Z/119, group/19, period/8); row 0 is unused (zeros).

    Lanthanides (57–71) and actinides (89–103) get group 3 and periods 6/7, as in the published
    model; pymatgen's ``group`` and ``row`` already say so (checked against the reference table).
    """
    from pymatgen.core.periodic_table import Element

    table = np.zeros((119, 3), dtype=np.float32)
    for z in range(1, 119):
        el = Element.from_Z(z)
        table[z] = np.array([z / 119, el.group / 19, el.row / 8], dtype=np.float64).astype(np.float32)
    return table


@dataclass(frozen=True)
class SparseImage:
    """One voxel image: occupied voxel indices (n, 3) int16 in [i_x, i_y, i_z] order, sorted
    lexicographically, and the atomic number (n,) uint8 of the atom in each voxel."""

    ijk: np.ndarray
    numbers: np.ndarray

    @property
    def values(self) -> np.ndarray:
        """(n, 3) float32 channel values (atomic number, group, period)."""
        return channel_table()[self.numbers]

    @property
    def linear(self) -> np.ndarray:
        """(n,) int64 flat voxel index ((i_x·128 + i_y)·128 + i_z)."""
        ijk = self.ijk.astype(np.int64)
        return (ijk[:, 0] * GRID + ijk[:, 1]) * GRID + ijk[:, 2]

    def dense(self) -> np.ndarray:
        """(3, 128, 128, 128) float32 dense image, channels first (PyTorch order)."""
        img = np.zeros((3, GRID, GRID, GRID), dtype=np.float32)
        i, j, k = self.ijk.T.astype(np.int64)
        img[:, i, j, k] = self.values.T
        return img

    def sha256(self) -> str:
        """Hash of the sorted int16 index triples (the reference data's `occupied_sha256`)."""
        return hashlib.sha256(np.ascontiguousarray(self.ijk, dtype="<i2").tobytes()).hexdigest()


# ---- rotations ------------------------------------------------------------------------------
def xiespp_angles(angles_deg) -> np.ndarray:
    """Angle triples as the published model uses them: rounded to float16 (round-to-nearest-even)."""
    return np.asarray(angles_deg, dtype=np.float64).astype(np.float16).astype(np.float64)


def angles_to_matrix(angles_deg) -> np.ndarray:
    """(…, 3) angle triples (α, β, γ) in degrees → (…, 3, 3) float64 R = R_z(γ)·R_y(β)·R_x(α)."""
    from scipy.spatial.transform import Rotation

    a = np.asarray(angles_deg, dtype=np.float64)
    return Rotation.from_euler("xyz", a.reshape(-1, 3), degrees=True).as_matrix().reshape(a.shape[:-1] + (3, 3))


def matrix_to_angles(matrices) -> np.ndarray:
    """Inverse of :func:`angles_to_matrix` (angles in [0, 360) for reporting)."""
    from scipy.spatial.transform import Rotation

    m = np.asarray(matrices, dtype=np.float64)
    ang = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_euler("xyz", degrees=True) % 360.0
    return ang.reshape(m.shape[:-2] + (3,))


def sample_rotations(sampler: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` rotations as angle triples (degrees, xiespp convention), shape (n, 3).

    ``haar`` draws uniformly on SO(3) and reports the exact Euler angles of each matrix;
    ``xiespp`` draws each angle uniformly in [0°, 360°) and rounds it to float16, as upstream;
    ``sobol`` is a low-discrepancy set: scrambled Sobol points of the unit cube mapped to unit
    quaternions (Shoemake's uniform map), so the n rotations cover SO(3) more evenly than n
    independent draws while each one is still uniformly distributed.
    """
    if sampler == "haar":
        from scipy.spatial.transform import Rotation

        if n == 0:
            return np.zeros((0, 3))
        return Rotation.random(n, random_state=rng).as_euler("xyz", degrees=True) % 360.0
    if sampler == "xiespp":
        return xiespp_angles(360.0 * rng.random((n, 3)))
    if sampler == "sobol":
        import warnings

        from scipy.spatial.transform import Rotation
        from scipy.stats import qmc

        if n == 0:
            return np.zeros((0, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # balance warning for n that is not a power of two
            u = qmc.Sobol(d=3, scramble=True, seed=rng).random(n)
        a, b = np.sqrt(1.0 - u[:, 0]), np.sqrt(u[:, 0])
        t1, t2 = 2 * np.pi * u[:, 1], 2 * np.pi * u[:, 2]
        quat = np.column_stack([a * np.sin(t1), a * np.cos(t1), b * np.sin(t2), b * np.cos(t2)])
        return Rotation.from_quat(quat).as_euler("xyz", degrees=True) % 360.0
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def crystal_rng(seed: int, key: str, *extra: int) -> np.random.Generator:
    """A generator that depends only on (seed, crystal id, extra ints such as the epoch).

    Keying on the crystal's id, not its position in a batch, keeps rotations identical whatever
    the batch size, number of workers or input order.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *extra, *words]))


def _xiespp_factors(angles_deg: np.ndarray) -> np.ndarray:
    """(E, 3, 3) float32 (cos, sin, 1 − cos) of each axis angle, rounded as upstream does."""
    theta = np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3) * (np.pi / 180.0)
    c64 = np.cos(theta)
    return np.stack([c64.astype(np.float32), np.sin(theta).astype(np.float32), (1.0 - c64).astype(np.float32)], -1)


def _rotate_xiespp(points: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Rotate float32 points about the centre exactly as the published code does.

    Three extrinsic axis rotations (x by α, then y by β, then z by γ), each evaluated in float32
    in a fixed operation order; a float64 matrix would move a few voxels in ~15 % of images.
    """
    f32 = np.float32
    cen = f32(CENTER)
    r = points
    for axis, angle in enumerate(np.asarray(angles_deg, dtype=np.float64)):
        theta = float(angle) * (np.pi / 180.0)
        c64 = np.cos(theta)
        c, s, omc = f32(c64), f32(np.sin(theta)), f32(1.0 - c64)
        p = r - cen  # float32
        out = np.empty_like(p)
        # i is the rotation axis, (j, k) the right-handed pair perpendicular to it
        i, j, k = axis, (axis + 1) % 3, (axis + 2) % 3
        pi, pj, pk = p[:, i], p[:, j], p[:, k]
        out[:, i] = (c * pi + pi * omc) + cen
        out[:, j] = (c * pj - s * pk) + cen
        out[:, k] = (c * pk + s * pj) + cen
        r = out
    return r


# ---- the imager -----------------------------------------------------------------------------
def standard_frame(cell: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-express a crystal in ASE's frame (a along +x, b in the xy-plane).

    The image depends on the frame; fixing it makes the image a function of the crystal alone
    and matches the published model's parsing (ASE).
    """
    from ase.geometry import cell_to_cellpar, cellpar_to_cell

    cell = np.asarray(cell, dtype=np.float64)
    frac = np.linalg.solve(cell.T, np.asarray(positions, dtype=np.float64).T).T
    new_cell = cellpar_to_cell(cell_to_cellpar(cell))
    return new_cell, frac @ new_cell


def ase_frame(cif_text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(cell, positions, numbers) of the crystal in CIF text exactly as ``ase.io.read`` returns it,
    or None if ASE cannot read it."""
    import io
    import warnings

    import ase.io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms = ase.io.read(io.StringIO(cif_text), format="cif")
    except Exception:  # noqa: BLE001 - any ASE failure means: use the pymatgen structure
        return None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    return np.asarray(atoms.cell[:], dtype=np.float64), np.asarray(atoms.positions, np.float64), atoms.numbers


class CrystalImager:
    """Voxel images of one crystal for any number of rotations.

    Parameters are the unit cell (rows a, b, c in Å), Cartesian positions (Å) and atomic
    numbers, used as given (call :meth:`from_structure` to start from a pymatgen Structure in
    the standard frame). The periodic point cloud is computed once here.
    """

    def __init__(self, cell, positions, numbers):
        cell = np.asarray(cell, dtype=np.float64)
        numbers = np.asarray(numbers)
        if numbers.size == 0:
            raise ValueError("crystal has no atoms")
        if numbers.min() < 1 or numbers.max() > 118:
            raise ValueError("atomic numbers must lie in 1…118")
        # centre the unit cell's bounding box on the cube centre, in float32 as upstream
        q = np.asarray(positions, dtype=np.float64).astype(np.float32)
        mid = (q.max(axis=0) + q.min(axis=0)) / np.float32(2)
        q = (q.astype(np.float64) + (CENTER - mid.astype(np.float64))).astype(np.float32)
        self.points, self.numbers = _tile(cell, q, numbers.astype(np.uint8))

    @classmethod
    def from_structure(cls, structure) -> "CrystalImager":
        from cosynth.io.validate import check_tiling_budget  # io imports this module

        cell, pos = standard_frame(structure.lattice.matrix, structure.cart_coords)
        check_tiling_budget(cell, pos)  # a too small or oblique cell raises instead of tiling for hours
        return cls(cell, pos, [site.specie.Z for site in structure])

    @classmethod
    def from_record(cls, record, sampler: str = "haar") -> "CrystalImager":
        """The imager of a :class:`~cosynth.io.CrystalRecord` for ``sampler``.

        In ``xiespp`` mode a crystal read from CIF text (a file or a table cell; ``record.cif``)
        is positioned exactly as ``ase.io.read`` returns it — cell, Cartesian positions and
        numbers — as the published code does: ASE wraps some coordinates written as 0 to 1.0 in
        oblique cells, which moves that atom by a lattice vector and changes the centring
        (specs/voxel-image.md). Other inputs, other samplers, or a CIF whose ASE reading does
        not hold the record's atoms (e.g. after disorder resolution) use :meth:`from_structure`.
        """
        if sampler == "xiespp" and getattr(record, "cif", None):
            frame = ase_frame(record.cif)
            if frame is not None:
                numbers = sorted(site.specie.Z for site in record.structure)
                if sorted(int(z) for z in frame[2]) == numbers:
                    return cls(*frame)
        return cls.from_structure(record.structure)

    @property
    def n_points(self) -> int:
        return len(self.numbers)

    def image(self, angles_deg, sampler: str = "haar") -> SparseImage:
        """The sparse image for one rotation given as an angle triple (degrees).

        ``xiespp`` rounds the angles to float16 and rotates exactly as the published code;
        ``haar`` and ``sobol`` apply the float32 rotation matrix of the (unrounded) angles.
        """
        return self.images(np.asarray(angles_deg, dtype=np.float64).reshape(1, 3), sampler)[0]

    def images(self, angles_deg, sampler: str = "haar", chunk: int = 16, parallel: bool = True) -> list[SparseImage]:
        """The sparse images of all rotations (E, 3) at once (the same images as :meth:`image`).

        Rotation and voxelisation run as one compiled loop over ``chunk`` rotations at a time (in
        parallel), so memory stays at ``chunk`` × the tiling whatever E is. ``xiespp`` stays
        bit-exact (the float32 axis rotations in upstream's order); ``haar``/``sobol`` evaluate
        the float32 matrix product as ((p·m0 + p·m1) + p·m2) + centre, which can differ from a
        BLAS product in the last bit (a voxel in rare images, never the sampler's statistics).
        ``parallel=False`` keeps to the calling thread (e.g. a background imaging thread).
        """
        angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        out: list[SparseImage] = []
        for start in range(0, len(angles), chunk):
            part = angles[start : start + chunk]
            if sampler == "xiespp":
                rot, xiespp = _xiespp_factors(xiespp_angles(part)), True
            else:
                rot, xiespp = angles_to_matrix(part).astype(np.float32), False
            out += _images_batch(self.points, self.numbers, rot, xiespp, parallel)
        return out


def _tile(cell: np.ndarray, q: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All periodic images q_i + n·cell inside [0, BIG_BOX)³ that can reach the image box.

    The translation range comes from the inverse lattice (corners of the cube in fractional
    coordinates), so it is complete for any cell shape. Points farther than the image box's
    half-diagonal from the centre can never be rotated into the box and are dropped (this
    changes no image, only the work per rotation).
    """
    inv = np.linalg.inv(cell)
    corners = np.array([[x, y, z] for x in (0, BIG_BOX) for y in (0, BIG_BOX) for z in (0, BIG_BOX)])
    qf = q.astype(np.float64)
    frac = (corners[:, None, :] - qf[None, :, :]).reshape(-1, 3) @ inv
    lo = np.floor(frac.min(axis=0)).astype(int) - 1
    hi = np.ceil(frac.max(axis=0)).astype(int) + 1
    nb = np.arange(lo[1], hi[1] + 1)
    nc = np.arange(lo[2], hi[2] + 1)
    bc = np.stack(np.meshgrid(nb, nc, indexing="ij"), -1).reshape(-1, 2)
    pts, zs = [], []
    for na in range(lo[0], hi[0] + 1):  # one slab of translations at a time bounds memory
        n = np.column_stack([np.full(len(bc), na), bc]).astype(np.float64)
        shift = n @ cell  # (T, 3) float64
        cand = (qf[None, :, :] + shift[:, None, :]).astype(np.float32)  # f32(f64(q) + f64(n·cell))
        c64 = cand.astype(np.float64)
        inside = np.all((c64 >= 0.0) & (c64 < BIG_BOX), axis=-1)
        inside &= np.einsum("tij,tij->ti", c64 - CENTER, c64 - CENTER) <= _REACH**2
        if inside.any():
            t_idx, a_idx = np.nonzero(inside)
            pts.append(cand[t_idx, a_idx])
            zs.append(numbers[a_idx])
    if not pts:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.uint8)
    return np.concatenate(pts), np.concatenate(zs)


@njit(cache=True, inline="always")
def _xiespp_axis(c, s, omc, pi, pj, pk, cen):  # pragma: no cover - compiled
    """One upstream axis rotation in float32: (i, j, k) are the axis and its right-handed pair."""
    return (c * pi + pi * omc) + cen, (c * pj - s * pk) + cen, (c * pk + s * pj) + cen


# no fastmath: every float operation as written, in this order
def _image_kernel(points, numbers, rot, xiespp, ijk, z, counts, collision):  # pragma: no cover - compiled
    """Rotate (float32), crop and voxelise (float64) the points for each rotation e, as
    :func:`_rotate_xiespp` / the float32 matrix product and :func:`_voxelize` do, then sort the
    voxels by flat index (counting sort on (i_x, i_y), then i_z within each bucket) into
    ijk[e, :counts[e]] / z[e, :counts[e]]; collision[e] = smallest flat index holding two atoms
    or -1. ``rot[e]`` is (cos, sin, 1 − cos) per axis (xiespp) or the rotation matrix."""
    n_rot, n_pts = rot.shape[0], points.shape[0]
    cen = np.float32(CENTER)
    for e in prange(n_rot):
        key = np.empty(n_pts, np.int32)
        kz = np.empty(n_pts, np.int32)
        src = np.empty(n_pts, np.int32)
        m = rot[e]
        n = 0
        for i in range(n_pts):
            r0, r1, r2 = points[i, 0], points[i, 1], points[i, 2]
            if xiespp:
                r0, r1, r2 = _xiespp_axis(m[0, 0], m[0, 1], m[0, 2], r0 - cen, r1 - cen, r2 - cen, cen)
                r1, r2, r0 = _xiespp_axis(m[1, 0], m[1, 1], m[1, 2], r1 - cen, r2 - cen, r0 - cen, cen)
                r2, r0, r1 = _xiespp_axis(m[2, 0], m[2, 1], m[2, 2], r2 - cen, r0 - cen, r1 - cen, cen)
            else:
                p0, p1, p2 = r0 - cen, r1 - cen, r2 - cen
                r0 = ((p0 * m[0, 0] + p1 * m[0, 1]) + p2 * m[0, 2]) + cen
                r1 = ((p0 * m[1, 0] + p1 * m[1, 1]) + p2 * m[1, 2]) + cen
                r2 = ((p0 * m[2, 0] + p1 * m[2, 1]) + p2 * m[2, 2]) + cen
            x = np.float64(r0) - OFFSET
            y = np.float64(r1) - OFFSET
            w = np.float64(r2) - OFFSET
            if x >= 0.0 and x < BOX and y >= 0.0 and y < BOX and w >= 0.0 and w < BOX:
                key[n] = int(np.floor((x / BOX) * GRID)) * GRID + int(np.floor((y / BOX) * GRID))
                kz[n] = int(np.floor((w / BOX) * GRID))
                src[n] = i
                n += 1
        start = np.zeros(GRID * GRID + 1, np.int32)
        for t in range(n):
            start[key[t] + 1] += 1
        for b in range(GRID * GRID):
            start[b + 1] += start[b]
        fill = start[:-1].copy()
        order = np.empty(n, np.int32)
        for t in range(n):
            order[fill[key[t]]] = t
            fill[key[t]] += 1
        dup = -1
        for b in range(GRID * GRID):
            lo, hi = start[b], start[b + 1]
            for t in range(lo + 1, hi):  # insertion sort by i_z (a bucket holds a few atoms)
                v = order[t]
                j = t - 1
                while j >= lo and kz[order[j]] > kz[v]:
                    order[j + 1] = order[j]
                    j -= 1
                order[j + 1] = v
            for t in range(lo, hi):
                v = order[t]
                if dup < 0 and t > lo and kz[order[t - 1]] == kz[v]:
                    dup = b * GRID + kz[v]
                ijk[e, t, 0] = b // GRID
                ijk[e, t, 1] = b % GRID
                ijk[e, t, 2] = kz[v]
                z[e, t] = numbers[src[v]]
        counts[e] = n
        collision[e] = dup


# one rotation runs serially: waking a thread pool for it costs more than it saves. A forked
# child (e.g. a ProcessPoolExecutor worker) also runs serially: numba's OpenMP layer (GNU
# libgomp) is not fork-safe once the parent has used it.
_IMPORT_PID = os.getpid()
_image_serial = njit(cache=True, nogil=True)(_image_kernel)
_image_parallel = njit(cache=True, nogil=True, parallel=True)(_image_kernel)


def _images_batch(points: np.ndarray, numbers: np.ndarray, rot: np.ndarray, xiespp: bool,
                  parallel: bool = True) -> list[SparseImage]:
    n_rot, n_pts = rot.shape[0], points.shape[0]
    ijk = np.empty((n_rot, n_pts, 3), np.int16)
    z = np.empty((n_rot, n_pts), np.uint8)
    counts = np.zeros(n_rot, np.int64)
    collision = np.full(n_rot, -1, np.int64)
    if n_rot:
        kernel = _image_parallel if parallel and n_rot > 1 and os.getpid() == _IMPORT_PID else _image_serial
        kernel(points, numbers, np.ascontiguousarray(rot, dtype=np.float32), xiespp, ijk, z, counts, collision)
    for e in range(n_rot):
        if collision[e] >= 0:
            voxel_ = tuple(int(v) for v in np.unravel_index(int(collision[e]), (GRID,) * 3))
            raise VoxelCollisionError(f"two atoms fall into voxel {voxel_}")
    return [SparseImage(ijk=ijk[e, : counts[e]].copy(), numbers=z[e, : counts[e]].copy()) for e in range(n_rot)]


def _voxelize(rotated: np.ndarray, numbers: np.ndarray) -> SparseImage:
    """Crop float32 points to the image box and map each to its voxel (one atom per voxel)."""
    r64 = rotated.astype(np.float64) - OFFSET
    keep = np.all((r64 >= 0.0) & (r64 < BOX), axis=1)
    idx = np.floor((r64[keep] / BOX) * GRID).astype(np.int64)
    lin = (idx[:, 0] * GRID + idx[:, 1]) * GRID + idx[:, 2]
    order = np.argsort(lin, kind="stable")
    lin = lin[order]
    if lin.size > 1 and np.any(lin[1:] == lin[:-1]):
        dup = lin[1:][lin[1:] == lin[:-1]][0]
        raise VoxelCollisionError(
            f"two atoms fall into voxel {tuple(int(v) for v in np.unravel_index(dup, (GRID,) * 3))}"
        )
    ijk = idx[order].astype(np.int16)
    return SparseImage(ijk=ijk, numbers=numbers[keep][order])
