"""The voxel CNN (XIE-SPP v2 architecture, 61,703 parameters) with a sparse and a dense path.

3 × [Conv3d(32, k=3, pad 1) → ReLU → MaxPool3d(4)] → flatten (channels-last order, as the
published Keras model) → Linear 13 → Linear 13 → Linear 13 → Linear 1. The published model has
no activation between the 13-unit layers; ``hidden_activation`` may add one for new models.
``forward`` returns logits; the likelihood is ``sigmoid(logit)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cosynth.models.layers import ConfiguredModule
from cosynth.models.voxel_cnn.precision import PRECISIONS, autocast, resolve_precision
from cosynth.models.voxel_cnn.sparse import sparse_first_block
from cosynth.represent.voxel import GRID, SparseImage, channel_table

ACTIVATIONS = {"none": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass
class SparseBatch:
    """A batch of sparse images: concatenated voxel indices and channel values plus offsets."""

    ijk: torch.Tensor  # (P, 3) int32, each image's rows sorted lexicographically
    values: torch.Tensor  # (P, 3) float32
    starts: torch.Tensor  # (B+1,) int64
    codes: torch.Tensor | None = None  # (P,) int32 row of ``table`` holding each voxel's values
    table: torch.Tensor | None = None  # (U, 3) float32 distinct value rows (one per element present)

    @classmethod
    def from_images(cls, images: list[SparseImage]) -> "SparseBatch":
        table = channel_table()
        sizes = [len(im.numbers) for im in images]
        ijk = np.concatenate([im.ijk for im in images]).astype(np.int32) if images else np.zeros((0, 3), np.int32)
        z = np.concatenate([im.numbers for im in images]) if images else np.zeros(0, np.uint8)
        present = np.flatnonzero(np.bincount(z, minlength=len(table)))
        remap = np.zeros(len(table), np.int32)
        remap[present] = np.arange(len(present), dtype=np.int32)
        return cls(
            ijk=torch.from_numpy(np.ascontiguousarray(ijk)),
            values=torch.from_numpy(np.ascontiguousarray(table[z])),
            starts=torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)),
            codes=torch.from_numpy(remap[z]),
            table=torch.from_numpy(np.ascontiguousarray(table[present])),
        )

    def first_block(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Block 1 (conv → ReLU → max-pool 4) of these images: (B, F, 32, 32, 32) float32."""
        return sparse_first_block(self.ijk, self.values, self.starts, weight, bias, self.codes, self.table)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def dense(self) -> torch.Tensor:
        """(B, 3, 128, 128, 128) dense images (for the reference path)."""
        x = torch.zeros(len(self), self.values.shape[1], GRID, GRID, GRID)
        img = torch.repeat_interleave(torch.arange(len(self)), self.starts.diff())
        i, j, k = self.ijk.long().T
        x[img, :, i, j, k] = self.values
        return x


class VoxelCNN(ConfiguredModule):
    """Synthesizability CNN on 3×128³ voxel images.

    ``path`` chooses how block 1 runs: ``"sparse"`` (default on CPU; exact, fast, low memory)
    or ``"dense"`` (the plain PyTorch reference; may be faster on a GPU).

    ``precision`` (``"fp32"`` default, or ``"bf16"``; a runtime setting, not saved in model files)
    chooses how blocks 2–3 and the head run: bf16 is autocast with float32 master weights, so
    ``forward`` and ``backward`` both work; block 1 stays float32; logits are always float32.
    ``fp32`` adds no autocast context of its own, so an enclosing one (Lightning's
    ``precision="bf16-mixed"``) has the same effect as ``"bf16"``.
    Set it with ``model.precision = "bf16"`` or ``model.set_precision("auto")`` (see
    :func:`~cosynth.models.voxel_cnn.precision.resolve_precision`).
    """

    def __init__(self, in_channels: int = 3, filters: int = 32, hidden: tuple[int, ...] = (13, 13, 13),
                 hidden_activation: str = "none"):
        super().__init__()
        self.config = {"in_channels": in_channels, "filters": filters, "hidden": list(hidden),
                       "hidden_activation": hidden_activation}
        self.conv1 = nn.Conv3d(in_channels, filters, 3, padding=1)
        self.conv2 = nn.Conv3d(filters, filters, 3, padding=1)
        self.conv3 = nn.Conv3d(filters, filters, 3, padding=1)
        layers: list[nn.Module] = []
        width = filters * 8
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[hidden_activation]()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)
        self.path = "sparse"
        self.precision = "fp32"
        # share of conv2/conv3 ReLUs that fire, from the latest training batch: near 0 means the
        # network has died (no gradient reaches the convolutions) and can no longer learn
        self.activity: dict[str, float] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases (Keras' defaults, as the published model was
        trained). PyTorch's default init leaves this network's signal so small (logits ~0.01 with
        almost no spread across crystals) that training sat at chance for epochs."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {value!r} (resolve 'auto' with "
                             "set_precision)")
        self._precision = value

    def set_precision(self, requested: str = "auto") -> "VoxelCNN":
        """Set :attr:`precision` from ``"auto"``, ``"fp32"`` or ``"bf16"`` for this model's device
        (bf16 falls back to fp32 with a warning where it is not supported); returns the model."""
        self.precision = resolve_precision(requested, self.conv1.weight.device)
        return self

    def _conv_tail(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks 2–3 from block 1's pooled output (B, F, 32³): the (B, F, 2, 2, 2) conv features."""
        with autocast(self.precision, x.device.type):
            return self._conv_blocks(x).float()

    def _conv_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        a2 = torch.relu(self.conv2(x))
        x = nn.functional.max_pool3d(a2, 4)
        a3 = torch.relu(self.conv3(x))
        if self.training:
            self.activity = {"conv2": float((a2 > 0).float().mean()), "conv3": float((a3 > 0).float().mean())}
        return nn.functional.max_pool3d(a3, 4)

    def _tail(self, x: torch.Tensor, with_features: bool = False):
        """Blocks 2–3 and the dense head, from block 1's pooled output (B, F, 32³).

        ``with_features`` also returns the last hidden layer (the model's latent description of
        the crystal, used for the applicability-domain score)."""
        with autocast(self.precision, x.device.type):
            x = self._conv_blocks(x)
            x = x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1)  # channels-last flatten (Keras order)
            if not with_features:
                return self.head(x).squeeze(-1).float()
            features = self.head[:-1](x)
            return self.head[-1](features).squeeze(-1).float(), features.float()

    def conv_features(self, batch: SparseBatch) -> torch.Tensor:
        """The convolutions' output (B, F, 2, 2, 2) of sparse images, before the dense head."""
        return self._conv_tail(batch.first_block(self.conv1.weight, self.conv1.bias))

    def logits_and_features(self, batch: SparseBatch):
        """(logits, last-hidden-layer features) of sparse images."""
        x = batch.first_block(self.conv1.weight, self.conv1.bias)
        return self._tail(x, with_features=True)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from dense images (B, 3, 128, 128, 128)."""
        x = nn.functional.max_pool3d(torch.relu(self.conv1(x)), 4)
        return self._tail(x)

    def forward_sparse(self, batch: SparseBatch) -> torch.Tensor:
        """Logits from sparse images, block 1 without the F×128³ activation."""
        x = batch.first_block(self.conv1.weight, self.conv1.bias)
        return self._tail(x)

    def forward(self, batch: SparseBatch | torch.Tensor) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            return self.forward_dense(batch)
        if self.path == "dense" or batch.values.device.type != "cpu" or self.conv1.weight.device.type != "cpu":
            return self.forward_dense(batch.dense().to(self.conv1.weight.device))  # the sparse kernel is CPU code
        return self.forward_sparse(batch)


def load_keras_weights(model: VoxelCNN, h5_path) -> VoxelCNN:
    """Copy the published XIE-SPP Keras HDF5 weights into ``model`` (h5py only, no TensorFlow).

    Keras conv kernels are (kx, ky, kz, C_in, C_out) → PyTorch (C_out, C_in, kx, ky, kz); dense
    kernels (in, out) → transposed. Both frameworks compute cross-correlation, so no flip.
    """
    import h5py

    convs = [model.conv1, model.conv2, model.conv3]
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    names_conv = ["conv3d", "conv3d_1", "conv3d_2"]
    names_dense = ["dense", "dense_1", "dense_2", "dense_3"]
    if len(linears) != len(names_dense):
        raise ValueError("the published weights need the compatible architecture (hidden=(13, 13, 13))")
    with h5py.File(h5_path, "r") as f:

        def arrays(name):
            if name not in f:
                raise ValueError(f"{h5_path}: no weight group {name!r} (found: {', '.join(sorted(f.keys()))})")
            grp = f[name]
            found = {}
            grp.visititems(lambda key, obj: found.__setitem__(key.split("/")[-1], obj[()])
                           if isinstance(obj, h5py.Dataset) else None)
            try:
                return found["kernel:0"], found["bias:0"]
            except KeyError as err:
                raise ValueError(f"{h5_path}: group {name!r} has no {err.args[0]!r}") from None

        with torch.no_grad():
            for mod, name in zip(convs, names_conv, strict=False):
                k, b = arrays(name)
                mod.weight.copy_(torch.from_numpy(np.transpose(k, (4, 3, 0, 1, 2)).copy()))
                mod.bias.copy_(torch.from_numpy(b))
            for mod, name in zip(linears, names_dense, strict=False):
                k, b = arrays(name)
                mod.weight.copy_(torch.from_numpy(k.T.copy()))
                mod.bias.copy_(torch.from_numpy(b))
    return model
