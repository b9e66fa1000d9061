"""Applicability domain: how far is a crystal from the data the model was trained on?

Two distances, each turned into a score in [0, 1] that reads like a percentile:
  * descriptor space — standardised physical descriptors (density, volume per atom, packing,
    mass, …): a crystal much denser than anything in training is outside the domain whatever
    the model says;
  * latent space — the CNN's last hidden layer, averaged over the crystal's rotations: what the
    model itself "sees".
For each, the score is the fraction of training crystals whose own (leave-one-out) mean distance
to their k nearest training neighbours is smaller than the new crystal's. About 0.5 is typical
of the training data; above 0.95 the crystal is farther from the training set than 95 % of the
training crystals are from each other — treat its likelihood with care.
"""

from __future__ import annotations

import numpy as np

from cosynth.represent.descriptors import compute_descriptors

DOMAIN_DESCRIPTORS = ("density", "volume_per_atom", "packing_fraction", "mean_atomic_mass", "n_elements",
                      "min_distance", "mean_electronegativity")
K = 5


def _knn_mean(query: np.ndarray, ref: np.ndarray, k: int, leave_one_out: bool) -> np.ndarray:
    from scipy.spatial import cKDTree

    kk = min(k + int(leave_one_out), len(ref))
    dist, _ = cKDTree(ref).query(query, k=kk)
    dist = dist.reshape(len(query), -1)
    if leave_one_out:
        dist = dist[:, 1:]
    return dist.mean(axis=1)


def _standardise(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (values - mean) / std
    return np.where(np.isfinite(z), z, 0.0)  # a missing descriptor sits at the training mean


def descriptor_matrix(structures) -> np.ndarray:
    desc = compute_descriptors([None] * len(structures), structures, use_cache=False)
    return desc[list(DOMAIN_DESCRIPTORS)].to_numpy(float)


def fit_domain(structures, latent: np.ndarray | None = None, k: int = K) -> dict:
    """Training statistics to store in a model file (plain lists: loadable with weights_only).

    Args:
        structures: the training structures.
        latent: their latent features, one row each, or None for descriptor space only.
        k: the number of nearest neighbours.

    Returns:
        k, descriptor names, their mean and std, the standardised training descriptors and the sorted
        leave-one-out k-NN mean distances; with ``latent``, the same for latent space.
    """
    X = descriptor_matrix(structures)
    mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    std = np.where(std > 0, std, 1.0)
    Z = _standardise(X, mean, std)
    out = {"k": k, "descriptors": list(DOMAIN_DESCRIPTORS), "mean": mean.tolist(), "std": std.tolist(),
           "train_descriptors": Z.astype(np.float32).tolist(),
           "train_knn_descriptors": np.sort(_knn_mean(Z, Z, k, True)).tolist()}
    if latent is not None and len(latent):
        L = np.asarray(latent, float)
        out["train_latent"] = L.astype(np.float32).tolist()
        out["train_knn_latent"] = np.sort(_knn_mean(L, L, k, True)).tolist()
    return out


def _percentile(distances: np.ndarray, reference: list) -> np.ndarray:
    ref = np.asarray(reference, float)
    return np.searchsorted(ref, distances, side="right") / len(ref)


def domain_scores(domain: dict, structures, latent: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``ad_descriptor`` (and ``ad_latent`` when latent features are given) per structure.

    Args:
        domain: the :func:`fit_domain` statistics.
        structures: the crystals to score.
        latent: their latent features, or None; used only when ``domain`` has latent statistics.

    Returns:
        Score name → one score in [0, 1] per structure (see the module doc).
    """
    Z = _standardise(descriptor_matrix(structures), np.asarray(domain["mean"]), np.asarray(domain["std"]))
    ref = np.asarray(domain["train_descriptors"], float)
    out = {"ad_descriptor": _percentile(_knn_mean(Z, ref, domain["k"], False), domain["train_knn_descriptors"])}
    if latent is not None and "train_latent" in domain:
        lat_ref = np.asarray(domain["train_latent"], float)
        d = _knn_mean(np.asarray(latent, float), lat_ref, domain["k"], False)
        out["ad_latent"] = _percentile(d, domain["train_knn_latent"])
    return out


def mean_latent(model, imager, angles, sampler: str) -> np.ndarray:
    """The model's last hidden layer for one crystal, averaged over its rotations.

    Args:
        model: the voxel CNN.
        imager: the crystal's imager.
        angles: the rotations.
        sampler: the rotation convention passed to ``imager.image``.

    Returns:
        The mean feature vector.
    """
    import torch

    from cosynth.models.voxel_cnn.model import SparseBatch

    images = [imager.image(a, sampler) for a in angles]
    with torch.inference_mode():
        _, feats = model.logits_and_features(SparseBatch.from_images(images))
    return feats.numpy().astype(np.float64).mean(axis=0)


DOMAIN_CRYSTALS = 2000  # training crystals that describe a model's applicability domain, at most
LATENT_ROTATIONS = 4  # rotations per crystal for its latent description (fixed, seeded)
LATENT_KEY = 0xAD


def latent_angles(seed: int, crystal_id: str, sampler: str) -> np.ndarray:
    """The fixed, seeded rotations (:data:`LATENT_ROTATIONS` of them) for a crystal's latent description.

    Args:
        seed: the model's seed.
        crystal_id: the crystal's id (keys the rotations).
        sampler: the rotation sampler; ``xiespp`` draws Haar rotations instead.

    Returns:
        The rotation angles.
    """
    from cosynth.represent.voxel import crystal_rng, sample_rotations

    return sample_rotations(sampler if sampler != "xiespp" else "haar", LATENT_ROTATIONS,
                            crystal_rng(seed, crystal_id, LATENT_KEY))


class DomainScorer:
    """Scores crystals one at a time against a model's stored training statistics."""

    def __init__(self, domain: dict, model, sampler: str = "haar", seed: int = 0):
        from scipy.spatial import cKDTree

        self.domain, self.model, self.sampler, self.seed = domain, model, sampler, seed
        self.mean, self.std = np.asarray(domain["mean"]), np.asarray(domain["std"])
        self.tree = cKDTree(np.asarray(domain["train_descriptors"], float))
        self.latent_tree = cKDTree(np.asarray(domain["train_latent"], float)) if "train_latent" in domain else None

    def _score(self, tree, point, reference) -> float:
        k = min(self.domain["k"], tree.n)
        dist, _ = tree.query(point[None, :], k=k)
        return float(_percentile(np.atleast_1d(np.mean(dist)), reference)[0])

    def score(self, crystal_id: str, structure) -> dict:
        z = _standardise(descriptor_matrix([structure])[0], self.mean, self.std)
        out = {"ad_descriptor": self._score(self.tree, z, self.domain["train_knn_descriptors"])}
        if self.latent_tree is not None:
            from cosynth.represent.voxel import CrystalImager

            imager = CrystalImager.from_structure(structure)
            feats = mean_latent(self.model, imager, latent_angles(self.seed, crystal_id, self.sampler), "haar")
            out["ad_latent"] = self._score(self.latent_tree, feats, self.domain["train_knn_latent"])
        return out


def training_domain(model, ids, structures, sampler: str = "haar", seed: int = 0) -> dict:
    """fit_domain over training crystals, with their latent features from the trained model.

    A large training set is described by a seeded sample of :data:`DOMAIN_CRYSTALS` of its
    crystals: the neighbour distances need no more, and each costs a few forward passes and
    stays in the model file.

    Args:
        model: the trained voxel CNN.
        ids, structures: aligned training crystal ids and structures.
        sampler, seed: the rotation sampler and seed of :func:`latent_angles` (the seed also
            draws the sample).

    Returns:
        The :func:`fit_domain` statistics (descriptor and latent space).
    """
    from cosynth.represent.voxel import CrystalImager

    ids, structures = list(ids), list(structures)
    if len(ids) > DOMAIN_CRYSTALS:
        keep = np.sort(np.random.default_rng(np.random.SeedSequence([seed, 0xD0])).choice(
            len(ids), DOMAIN_CRYSTALS, replace=False))
        ids, structures = [ids[i] for i in keep], [structures[i] for i in keep]
    latent = np.array([mean_latent(model, CrystalImager.from_structure(s), latent_angles(seed, i, sampler), "haar")
                       for i, s in zip(ids, structures)])
    return fit_domain(structures, latent)
