"""Shared layers (Roost-style MLPs, batch norm) and scatter helpers on torch's own ``scatter_reduce``/``index_add`` (no torch-scatter)."""

from __future__ import annotations

import torch
from torch import nn


def scatter_sum(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of the rows of ``src`` per group.

    Args:
        src: values, one row per item.
        index: the group of each row.
        n: the number of groups.

    Returns:
        An (n, …) tensor; empty groups are 0.
    """
    out = src.new_zeros((n, *src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the rows of ``src`` per group.

    Args:
        src: values, one row per item.
        index: the group of each row.
        n: the number of groups.

    Returns:
        An (n, …) tensor; empty groups are 0.
    """
    total = scatter_sum(src, index, n)
    count = scatter_sum(torch.ones_like(index, dtype=src.dtype), index, n).clamp(min=1)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def scatter_max(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Element-wise maximum of the rows of ``src`` per group.

    Args:
        src: values, one row per item.
        index: the group of each row.
        n: the number of groups.

    Returns:
        An (n, …) tensor; empty groups are -inf.
    """
    out = src.new_full((n, *src.shape[1:]), float("-inf"))
    idx = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=True)


def weighted_softmax(logits: torch.Tensor, index: torch.Tensor, n: int, weights: torch.Tensor) -> torch.Tensor:
    """softmax of ``logits`` within groups of ``index``, each term multiplied by ``weights``.

    This is the Roost attention, where an element's weight is its fraction raised to a learnt power.

    Args:
        logits: (E, H) attention logits.
        index: the group of each row.
        n: the number of groups.
        weights: (E, 1) weight per row.

    Returns:
        (E, H) normalised attention coefficients.
    """
    shift = scatter_max(logits.detach(), index, n)[index]
    e = weights * torch.exp(logits - shift)
    return e / (scatter_sum(e, index, n)[index] + 1e-10)


class SafeBatchNorm(nn.BatchNorm1d):
    """BatchNorm that uses its running statistics for a batch of one row (instead of failing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        return super().forward(x)


def mlp(sizes, act=nn.SiLU, batchnorm: bool = True) -> nn.Sequential:
    """Hidden layers Linear → BatchNorm → SiLU, then a linear output (Roost's SimpleNetwork).

    Batch norm matters: matscholar embeddings are small (std ≈ 0.07) and the reference weight
    decay of 0.1 would otherwise shrink the features to nothing.

    Args:
        sizes: layer widths, input first and output last.
        act: the activation class.
        batchnorm: batch norm after each hidden Linear (an identity when False).

    Returns:
        The network.
    """
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), SafeBatchNorm(b) if batchnorm else nn.Identity(), act()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class ResidualMLP(nn.Module):
    """Hidden layers (Linear → BatchNorm → SiLU) with identity or projected skips, linear output."""

    def __init__(self, d_in: int, hidden, d_out: int):
        super().__init__()
        dims = [d_in, *hidden]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(SafeBatchNorm(b) for b in dims[1:])
        self.skips = nn.ModuleList(nn.Identity() if a == b else nn.Linear(a, b, bias=False)
                                   for a, b in zip(dims[:-1], dims[1:]))
        self.act = nn.SiLU()
        self.out = nn.Linear(dims[-1], d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc, bn, skip in zip(self.fcs, self.bns, self.skips):
            x = self.act(bn(fc(x))) + skip(x)
        return self.out(x)


class ConfiguredModule(nn.Module):
    """A network whose ``config`` (its constructor arguments, plain JSON values) rebuilds it.

    Model files store ``config`` next to the weights, so the file alone rebuilds the network
    (:func:`cosynth.models.registry.load_model`).
    """

    config: dict

    @classmethod
    def from_config(cls, config: dict) -> "ConfiguredModule":
        """A fresh (untrained) network with the constructor arguments in ``config``."""
        return cls(**config)
