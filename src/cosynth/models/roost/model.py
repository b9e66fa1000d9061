"""Roost encoder: weighted soft-attention message passing on the element-fraction graph.

Elements are nodes (embedding → ``d - 1`` features plus the fraction), every ordered element
pair is an edge. Each message-passing layer has ``heads`` attention heads whose coefficients are
a softmax of a gate MLP weighted by the sender's fraction to a learnt power; the layer output is
added to its input. A weighted attention pooling of the same kind turns nodes into one vector.
"""

from __future__ import annotations

import torch
from torch import nn

from cosynth.models.layers import ConfiguredModule, ResidualMLP, mlp, scatter_sum, weighted_softmax
from cosynth.represent.composition import DEFAULT_EMBEDDING, CompositionBatch, element_embedding


class WeightedAttention(nn.Module):
    """Heads of fraction-weighted soft attention from ``d_in`` features to ``d_out`` messages."""

    def __init__(self, d_in: int, d_out: int, heads: int, hidden: int):
        super().__init__()
        self.gates = nn.ModuleList(mlp([d_in, hidden, 1]) for _ in range(heads))
        self.messages = nn.ModuleList(mlp([d_in, hidden, d_out]) for _ in range(heads))
        self.pow = nn.Parameter(torch.ones(heads))

    def forward(self, x, fractions, index, n):
        outs = []
        for h, (gate, message) in enumerate(zip(self.gates, self.messages)):
            weights = fractions.unsqueeze(1) ** self.pow[h]
            attn = weighted_softmax(gate(x), index, n, weights)
            outs.append(scatter_sum(attn * message(x), index, n))
        return torch.stack(outs).mean(0)


class MessageLayer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.attention = WeightedAttention(2 * d, d, heads, hidden)

    def forward(self, h, fractions, self_idx, nbr_idx):
        pair = torch.cat([h[self_idx], h[nbr_idx]], dim=1)
        return h + self.attention(pair, fractions[nbr_idx], self_idx, len(h))


class RoostEncoder(nn.Module):
    """Composition → ``d`` features (the C of COSNet)."""

    def __init__(self, embedding: str = DEFAULT_EMBEDDING, d: int = 64, n_layers: int = 3, heads: int = 3,
                 hidden: int = 128, pool_heads: int = 3):
        super().__init__()
        _, matrix = element_embedding(embedding)
        self.register_buffer("table", matrix.clone(), persistent=False)
        self.embed = nn.Linear(matrix.shape[1], d - 1)
        self.layers = nn.ModuleList(MessageLayer(d, heads, hidden) for _ in range(n_layers))
        self.pool = WeightedAttention(d, d, pool_heads, hidden)
        self.d = d

    def forward(self, batch: CompositionBatch) -> torch.Tensor:
        h = torch.cat([self.embed(self.table[batch.elements]), batch.fractions.unsqueeze(1)], dim=1)
        for layer in self.layers:
            h = layer(h, batch.fractions, batch.self_idx, batch.nbr_idx)
        return self.pool(h, batch.fractions, batch.crystal_idx, batch.n)


class Roost(ConfiguredModule):
    """Roost encoder + residual output MLP: a composition-only property model."""

    def __init__(self, embedding: str = DEFAULT_EMBEDDING, d: int = 64, n_layers: int = 3, heads: int = 3,
                 hidden: int = 128, out_hidden=(64, 32), n_targets: int = 1, nonneg: bool = False):
        super().__init__()
        self.config = dict(embedding=embedding, d=d, n_layers=n_layers, heads=heads, hidden=hidden,
                           out_hidden=list(out_hidden), n_targets=n_targets, nonneg=nonneg)
        self.encoder = RoostEncoder(embedding, d, n_layers, heads, hidden)
        self.head = ResidualMLP(d, out_hidden, n_targets)
        self.nonneg = nonneg

    def forward(self, batch) -> torch.Tensor:
        """Predictions for a ``BimodalBatch`` (only its compositions are used)."""
        out = self.head(self.encoder(batch.comp))
        return torch.relu(out) if self.nonneg else out
