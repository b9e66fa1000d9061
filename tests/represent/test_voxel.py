"""Voxel images: channel values, exact XIE-SPP parity, samplers, frames and errors."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cosynth.represent import voxel
from cosynth.represent.voxel import (
    GRID,
    CrystalImager,
    SparseImage,
    VoxelCollisionError,
    angles_to_matrix,
    channel_table,
    crystal_rng,
    sample_rotations,
)

REF = "reference/xiespp"


def rocksalt(a: float = 5.64) -> Structure:
    """Conventional NaCl cell. With a = 5.64 Å no atom of the centred tiling lies on a voxel
    boundary (nearest ≈ 0.02 Å away), so axis-aligned rotations map voxels one to one."""
    fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    cl = [[(x + 0.5) % 1, y, z] for x, y, z in fcc]
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, fcc + cl)


def as_set(image: SparseImage) -> set[tuple[int, int, int, int]]:
    return {(int(i), int(j), int(k), int(z)) for (i, j, k), z in zip(image.ijk, image.numbers, strict=False)}


# ------------------------------------------------------------------------------ shared helper


def test_shared_path_skips_locally_and_fails_on_ci(shared_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no/such/file"):
        shared_path("no/such/file")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required when CI is set"):
        shared_path("no/such/file")


# ---------------------------------------------------------------------------------- channels


def test_channel_table_matches_reference_bit_for_bit(shared_path):
    ref = np.genfromtxt(shared_path(f"{REF}/channel_values.csv"), delimiter=",", names=True,
                        dtype=None, encoding="utf-8")
    assert list(ref["Z"]) == list(range(1, 119))
    expected = np.column_stack([ref["atomic_number"], ref["group"], ref["period"]]).astype(np.float64)
    expected = expected.astype(np.float32)
    table = channel_table()
    assert table.dtype == np.float32 and table.shape == (119, 3)
    assert np.all(table[0] == 0)
    np.testing.assert_array_equal(table[1:].view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("z, values", [
    (1, (0.008403, 0.052632, 0.125)),  # H
    (14, (0.117647, 0.736842, 0.375)),  # Si
    (31, (0.260504, 0.684211, 0.5)),  # Ga
    (57, (0.478992, 0.157895, 0.75)),  # La: lanthanide → group 3, period 6
])
def test_channel_spot_values_from_spec(z, values):
    np.testing.assert_allclose(channel_table()[z], values, atol=1e-6)


def test_lanthanides_and_actinides_have_group_3():
    table = channel_table()
    for z in [*range(57, 72), *range(89, 104)]:
        assert table[z, 1] == np.float32(3 / 19), z


# ------------------------------------------------------------------------------ xiespp parity


def test_xiespp_parity_all_reference_images(parity_rows, parity_cells):
    imagers = {name: CrystalImager(c["cell"], c["positions"], c["numbers"]) for name, c in parity_cells.items()}
    mismatches = []
    for row in parity_rows:
        image = imagers[row["cif_name"]].image(row["angles"], "xiespp")
        got = (len(image.numbers), image.sha256())
        want = (row["n_occupied_voxels"], row["occupied_sha256"])
        if got != want:
            mismatches.append((row["cif_name"], row["angles"], got[0], want[0]))
    assert not mismatches, f"{len(mismatches)} of {len(parity_rows)} images differ: {mismatches[:5]}"


def test_xiespp_full_image_of_gan9(parity_cells, shared_path):
    ref = np.load(shared_path(f"{REF}/voxels_GaN_9_rot3.npz"))
    c = parity_cells["GaN_9.cif"]
    image = CrystalImager(c["cell"], c["positions"], c["numbers"]).image((30, 45, 60), "xiespp")
    assert image.ijk.dtype == np.int16
    np.testing.assert_array_equal(image.ijk, ref["ijk"])
    assert image.values.dtype == np.float32
    np.testing.assert_array_equal(image.values, ref["values"])


# ---------------------------------------------------------------------------------- the tiling


def test_tiling_is_built_once_and_reused(monkeypatch):
    calls = []
    real_tile = voxel._tile

    def counting_tile(*args, **kw):
        calls.append(1)
        return real_tile(*args, **kw)

    monkeypatch.setattr(voxel, "_tile", counting_tile)
    imager = CrystalImager.from_structure(rocksalt())
    points, numbers = imager.points.copy(), imager.numbers.copy()
    n_points = imager.n_points
    counts = []
    for angles, sampler in [((0, 0, 0), "xiespp"), ((30, 45, 60), "xiespp"), ((10, 20, 30), "haar"),
                            ((200, 100, 50), "haar")]:
        counts.append(len(imager.image(angles, sampler).numbers))
        assert imager.n_points == n_points
        np.testing.assert_array_equal(imager.points, points)
        np.testing.assert_array_equal(imager.numbers, numbers)
    assert len(calls) == 1
    assert all(c > 0 for c in counts)


# ----------------------------------------------------------------------------------- samplers


def test_haar_rotations_depend_only_on_seed_and_id():
    a = sample_rotations("haar", 5, crystal_rng(7, "mp-149"))
    b = sample_rotations("haar", 5, crystal_rng(7, "mp-149"))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, sample_rotations("haar", 5, crystal_rng(7, "mp-150")))
    assert not np.allclose(a, sample_rotations("haar", 5, crystal_rng(8, "mp-149")))
    assert not np.allclose(a, sample_rotations("haar", 5, crystal_rng(7, "mp-149", 1)))  # e.g. another epoch


def test_haar_rotations_are_uniform_ish():
    angles = sample_rotations("haar", 2000, np.random.default_rng(0))
    assert angles.shape == (2000, 3)
    assert np.all((angles >= 0) & (angles < 360))
    mats = angles_to_matrix(angles)
    np.testing.assert_allclose(mats @ np.swapaxes(mats, -1, -2), np.broadcast_to(np.eye(3), mats.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(mats), 1.0, atol=1e-12)
    # Haar measure: E[R] = 0 and E[R_ij²] = 1/3 for every entry
    assert np.abs(mats.mean(axis=0)).max() < 0.05
    assert np.abs((mats**2).mean(axis=0) - 1 / 3).max() < 0.05


def test_xiespp_sampler_rounds_to_float16():
    angles = sample_rotations("xiespp", 50, np.random.default_rng(1))
    assert angles.shape == (50, 3)
    assert np.all((angles >= 0) & (angles <= 360))
    np.testing.assert_array_equal(angles, angles.astype(np.float16).astype(np.float64))


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="sampler"):
        sample_rotations("euler", 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sampler"):
        CrystalImager.from_structure(rocksalt()).image((0, 0, 0), "euler")


def test_haar_identity_equals_xiespp_identity():
    imager = CrystalImager.from_structure(rocksalt())
    haar, xie = imager.image((0, 0, 0), "haar"), imager.image((0, 0, 0), "xiespp")
    assert len(haar.numbers) > 1000
    assert haar.sha256() == xie.sha256()
    np.testing.assert_array_equal(haar.numbers, xie.numbers)


@pytest.mark.parametrize("sampler", ["haar", "xiespp"])
def test_quarter_turn_about_z_permutes_voxels(sampler):
    """R_z(90°) maps (x, y, z) → (−y, x, z) about the centre: voxel (i, j, k) → (127 − j, i, k)."""
    imager = CrystalImager.from_structure(rocksalt())
    base, turned = imager.image((0, 0, 0), sampler), imager.image((0, 0, 90), sampler)
    assert len(turned.numbers) == len(base.numbers)
    expected = {(GRID - 1 - j, i, k, z) for i, j, k, z in as_set(base)}
    assert as_set(turned) == expected


# ------------------------------------------------------------------------------ frame invariance


def triclinic_pair() -> tuple[Structure, Structure]:
    """One triclinic crystal in pymatgen's frame (c along z) and in ASE's (a along x)."""
    from ase.geometry import cellpar_to_cell

    par = (4.1, 5.3, 6.2, 78.0, 95.0, 104.0)
    species = ["Ga", "N", "Si", "O"]
    frac = [[0.0, 0.0, 0.0], [0.31, 0.22, 0.47], [0.6, 0.7, 0.15], [0.85, 0.4, 0.72]]
    pmg = Structure(Lattice.from_parameters(*par), species, frac)
    ase = Structure(Lattice(cellpar_to_cell(par)), species, frac)
    return pmg, ase


def test_image_does_not_depend_on_the_input_frame():
    pmg, ase = triclinic_pair()
    assert not np.allclose(pmg.lattice.matrix, ase.lattice.matrix, atol=1e-3)  # really different frames
    a, b = CrystalImager.from_structure(pmg), CrystalImager.from_structure(ase)
    for angles, sampler in [((0, 0, 0), "xiespp"), ((30, 45, 60), "xiespp"), ((12.5, 80.0, 250.0), "haar")]:
        ia, ib = a.image(angles, sampler), b.image(angles, sampler)
        assert len(ia.numbers) > 100
        assert ia.sha256() == ib.sha256(), (angles, sampler)
        np.testing.assert_array_equal(ia.numbers, ib.numbers)
    # the frame matters when the cell is used as given, which is why from_structure fixes it
    raw = CrystalImager(pmg.lattice.matrix, pmg.cart_coords, [s.specie.Z for s in pmg])
    assert raw.image((0, 0, 0), "xiespp").sha256() != a.image((0, 0, 0), "xiespp").sha256()


# ------------------------------------------------------------------------------------ errors


def test_two_atoms_in_one_voxel_is_an_error():
    s = Structure(Lattice.cubic(4.0), ["Si", "Si"], [[0.5, 0.5, 0.5], [0.5 + 0.05 / 4.0, 0.5, 0.5]])
    imager = CrystalImager.from_structure(s)
    with pytest.raises(VoxelCollisionError, match="voxel"):
        imager.image((0, 0, 0), "xiespp")
    assert issubclass(VoxelCollisionError, ValueError)


def test_crystal_without_atoms_is_rejected():
    with pytest.raises(ValueError, match="no atoms"):
        CrystalImager(np.eye(3) * 4.0, np.zeros((0, 3)), [])


def test_atomic_number_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="atomic number"):
        CrystalImager(np.eye(3) * 4.0, [[0, 0, 0]], [119])


# ---------------------------------------------------------------------------------- SparseImage


def test_dense_puts_values_at_indices_and_zeros_elsewhere():
    ijk = np.array([[0, 0, 0], [0, 5, 127], [64, 64, 64], [127, 127, 127]], dtype=np.int16)
    numbers = np.array([1, 14, 31, 57], dtype=np.uint8)
    image = SparseImage(ijk=ijk, numbers=numbers)
    dense = image.dense()
    assert dense.shape == (3, GRID, GRID, GRID) and dense.dtype == np.float32
    for (i, j, k), z in zip(ijk, numbers, strict=False):
        np.testing.assert_array_equal(dense[:, i, j, k], channel_table()[z])
    assert np.count_nonzero(dense) == 3 * len(numbers)
    np.testing.assert_allclose(dense.sum(axis=(1, 2, 3)), channel_table()[numbers].sum(axis=0), rtol=1e-6)
    assert image.linear.tolist() == [0, 5 * 128 + 127, (64 * 128 + 64) * 128 + 64, 128**3 - 1]


def test_dense_of_a_real_image():
    image = CrystalImager.from_structure(rocksalt()).image((30, 45, 60), "haar")
    dense = image.dense()
    occupied = np.argwhere(np.any(dense != 0, axis=0))
    np.testing.assert_array_equal(occupied, image.ijk)  # argwhere is lexicographic, like ijk
    assert np.count_nonzero(dense) == 3 * len(image.numbers)
    np.testing.assert_allclose(dense.sum(axis=(1, 2, 3)), image.values.astype(np.float64).sum(axis=0), rtol=1e-5)


# ------------------------------------------------------------------------- batched images


def _legacy_xiespp(imager: CrystalImager, angles) -> SparseImage:
    """One image by the per-rotation numpy reference (float32 axis rotations, numpy voxelise)."""
    return voxel._voxelize(voxel._rotate_xiespp(imager.points, voxel.xiespp_angles(angles)), imager.numbers)


def test_batched_xiespp_images_equal_the_numpy_reference_bit_for_bit(parity_cells):
    rng = np.random.default_rng(11)
    for name in sorted(parity_cells)[::4]:
        c = parity_cells[name]
        imager = CrystalImager(c["cell"], c["positions"], c["numbers"])
        angles = sample_rotations("xiespp", 20, rng)
        batch = imager.images(angles, "xiespp", chunk=7)  # several chunks, one short
        assert len(batch) == 20
        for a, got in zip(angles, batch, strict=False):
            want = _legacy_xiespp(imager, a)
            assert got.ijk.dtype == np.int16 and got.numbers.dtype == np.uint8
            np.testing.assert_array_equal(got.ijk, want.ijk)
            np.testing.assert_array_equal(got.numbers, want.numbers)


@pytest.mark.parametrize("sampler", ["haar", "sobol", "xiespp"])
def test_images_equal_image_per_rotation(sampler):
    imager = CrystalImager.from_structure(rocksalt())
    angles = sample_rotations(sampler, 5, np.random.default_rng(3))
    batch = imager.images(angles, sampler)
    for a, got in zip(angles, batch, strict=False):
        one = imager.image(a, sampler)
        np.testing.assert_array_equal(got.ijk, one.ijk)
        np.testing.assert_array_equal(got.numbers, one.numbers)
    assert imager.images(np.zeros((0, 3)), sampler) == []


def test_batched_haar_images_match_the_blas_product_up_to_rounding(parity_cells):
    """haar evaluates the float32 matrix product in a fixed order; a BLAS product may round the
    last bit differently, which can move an atom sitting on a voxel boundary — nothing more."""
    c = parity_cells["GaN_9.cif"]
    imager = CrystalImager(c["cell"], c["positions"], c["numbers"])
    angles = sample_rotations("haar", 10, np.random.default_rng(4))
    cen = np.float32(voxel.CENTER)
    for a, got in zip(angles, imager.images(angles, "haar"), strict=False):
        rot = angles_to_matrix(a).astype(np.float32)
        want = voxel._voxelize((imager.points - cen) @ rot.T + cen, imager.numbers)
        differ = as_set(got) ^ as_set(want)
        assert len(differ) <= 4, len(differ)
        assert abs(len(got.numbers) - len(want.numbers)) <= 2


def test_batched_images_report_collisions():
    s = Structure(Lattice.cubic(4.0), ["Si", "Si"], [[0.5, 0.5, 0.5], [0.5 + 0.05 / 4.0, 0.5, 0.5]])
    with pytest.raises(VoxelCollisionError, match="voxel"):
        CrystalImager.from_structure(s).images([(0, 0, 0), (10, 20, 30)], "xiespp")


# ------------------------------------------------- files in xiespp mode: positions as ASE reads them


def _oblique_cif() -> str:
    """A body-centred primitive cell (a = b = c, all angles 109.47°, as in MP's mp-567395) with
    an atom written at x = 0 that ASE's CIF reader brings back at x = 1.0."""
    return "\n".join([
        "data_oblique",
        "_symmetry_space_group_name_H-M   'P 1'",
        "_symmetry_Int_Tables_number   1",
        *(f"_cell_length_{x}   9.37532602" for x in "abc"),
        *(f"_cell_angle_{x}   109.47122063" for x in ("alpha", "beta", "gamma")),
        "loop_", " _symmetry_equiv_pos_site_id", " _symmetry_equiv_pos_as_xyz", "  1  'x, y, z'",
        "loop_", " _atom_site_type_symbol", " _atom_site_label", " _atom_site_symmetry_multiplicity",
        " _atom_site_fract_x", " _atom_site_fract_y", " _atom_site_fract_z", " _atom_site_occupancy",
        "  Fe  Fe0  1  0.00000000  0.00000000  0.00000000  1.0",
        "  Au  Au1  1  0.00000000  0.08677400  0.50000000  1.0",
        "  Au  Au2  1  0.50000000  0.00000000  0.08677400  1.0",
    ]) + "\n"


def test_xiespp_images_of_cif_files_use_the_positions_ase_reads(tmp_path):
    import ase.io

    from cosynth.io import read_crystals

    path = tmp_path / "oblique.cif"
    path.write_text(_oblique_cif())
    atoms = ase.io.read(path)
    frac = atoms.get_scaled_positions(wrap=False)
    assert frac[1, 0] == 1.0 and frac[0, 0] == 0.0  # the coordinate written as 0 comes back as 1.0

    (record,) = read_crystals([path])
    assert record.ok and record.cif is not None
    assert record.structure.frac_coords[1, 0] == 0.0  # pymatgen keeps it as written

    imager = CrystalImager.from_record(record, "xiespp")
    expected = CrystalImager(atoms.cell[:], atoms.positions, atoms.numbers)
    np.testing.assert_array_equal(imager.points, expected.points)
    np.testing.assert_array_equal(imager.numbers, expected.numbers)
    # the moved atom changes the centring, hence the image at every rotation, identity included
    as_written = CrystalImager.from_structure(record.structure)
    assert imager.image((0, 0, 0), "xiespp").sha256() != as_written.image((0, 0, 0), "xiespp").sha256()
    # other samplers and in-memory crystals are used as they are
    for other in ("haar", "sobol"):
        np.testing.assert_array_equal(CrystalImager.from_record(record, other).points, as_written.points)


def test_xiespp_images_of_cif_table_cells_use_the_positions_ase_reads():
    import pandas as pd

    from cosynth.io import read_crystals

    (record,) = read_crystals(pd.DataFrame({"id": ["x"], "cif": [_oblique_cif()]}))
    assert record.ok and record.cif is not None
    atoms_points = CrystalImager(*voxel.ase_frame(_oblique_cif())).points
    np.testing.assert_array_equal(CrystalImager.from_record(record, "xiespp").points, atoms_points)


def test_xiespp_example_files_are_positioned_as_the_reference_cells(xiespp_cifs, parity_cells):
    from cosynth.io import read_crystals

    for record in read_crystals(xiespp_cifs):
        c = parity_cells[record.id + ".cif"]
        ref = CrystalImager(c["cell"], c["positions"], c["numbers"])
        np.testing.assert_array_equal(CrystalImager.from_record(record, "xiespp").points, ref.points)
