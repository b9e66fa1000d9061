"""de-CGCNN encoder: gated graph convolutions on the crystal graph + primitive-cell descriptors.

Atom features are the element embedding, occupancy-weighted on disordered sites. Distances are
expanded in Gaussians (0–8 Å, step 0.2). Three CGCNN convolutions with batch norm, mean pooling
and softplus give the pooled vector; concatenated with the 8 cell descriptors it goes through a
linear layer and softplus. The descriptors are divided by fixed scales (10 Å, 180°, 7, 230) so
they enter the linear layer at order one — an affine reparametrisation of the raw values.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cosynth.models.layers import ConfiguredModule, ResidualMLP, SafeBatchNorm, scatter_mean, scatter_sum
from cosynth.represent.composition import DEFAULT_EMBEDDING, element_embedding
from cosynth.represent.graph import GraphBatch

DESCRIPTOR_SCALE = torch.tensor([10.0, 10.0, 10.0, 180.0, 180.0, 180.0, 7.0, 230.0])


def z_table(embedding: str) -> torch.Tensor:
    """Embedding matrix indexed by atomic number (row 0 and unknown elements are zeros)."""
    from pymatgen.core import Element

    index, matrix = element_embedding(embedding)
    table = torch.zeros(119, matrix.shape[1])
    for sym, row in index.items():
        try:
            z = Element(sym).Z
        except ValueError:
            continue
        if z < 119:
            table[z] = matrix[row]
    return table


class GaussianExpansion(nn.Module):
    def __init__(self, dmin: float = 0.0, dmax: float = 8.0, step: float = 0.2):
        super().__init__()
        self.register_buffer("centres", torch.arange(dmin, dmax + step / 2, step), persistent=False)
        self.width = step

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((d.unsqueeze(1) - self.centres) ** 2) / self.width ** 2)


class ConvLayer(nn.Module):
    """v_i ← softplus(v_i + BN(Σ_j σ(z_ij W_f) ⊙ softplus(z_ij W_s))), z_ij = [v_i, v_j, u_ij]."""

    def __init__(self, d: int, d_edge: int):
        super().__init__()
        self.fc = nn.Linear(2 * d + d_edge, 2 * d)
        self.bn1 = SafeBatchNorm(2 * d)
        self.bn2 = SafeBatchNorm(d)

    def forward(self, v, edge, centre, neighbour):
        # W·[v_i, v_j, u_ij] computed as W_self·v_i + W_nbr·v_j + W_edge·u_ij: the node terms are
        # computed once per site and gathered, which is the same map for a fraction of the work
        d = v.shape[1]
        w, b = self.fc.weight, self.fc.bias
        node_self = v @ w[:, :d].T
        node_nbr = v @ w[:, d:2 * d].T
        z = self.bn1(node_self[centre] + node_nbr[neighbour] + torch.addmm(b, edge, w[:, 2 * d:].T))
        gate, core = z.chunk(2, dim=1)
        summed = scatter_sum(torch.sigmoid(gate) * F.softplus(core), centre, len(v))
        return F.softplus(v + self.bn2(summed))


class CGCNNEncoder(nn.Module):
    """Crystal graph → ``d`` features (the S of COSNet)."""

    def __init__(self, embedding: str = DEFAULT_EMBEDDING, d: int = 64, n_conv: int = 3, descriptors: bool = True):
        super().__init__()
        table = z_table(embedding)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("desc_scale", DESCRIPTOR_SCALE.clone(), persistent=False)
        self.gauss = GaussianExpansion()
        self.embed = nn.Linear(table.shape[1], d)
        self.convs = nn.ModuleList(ConvLayer(d, len(self.gauss.centres)) for _ in range(n_conv))
        self.descriptors = descriptors
        self.out = nn.Linear(d + (8 if descriptors else 0), d)
        self.d = d

    def forward(self, g: GraphBatch) -> torch.Tensor:
        atom = scatter_sum(self.table[g.species_z] * g.species_occ.unsqueeze(1), g.species_site, g.n_sites)
        v = self.embed(atom)
        edge = self.gauss(g.distance)
        for conv in self.convs:
            v = conv(v, edge, g.centre, g.neighbour)
        pooled = F.softplus(scatter_mean(v, g.site_crystal, g.n))
        if self.descriptors:
            pooled = torch.cat([pooled, g.descriptors / self.desc_scale], dim=1)
        return F.softplus(self.out(pooled))


class CGCNN(ConfiguredModule):
    """de-CGCNN encoder + residual output MLP: a structure-only property model."""

    def __init__(self, embedding: str = DEFAULT_EMBEDDING, d: int = 64, n_conv: int = 3, descriptors: bool = True,
                 out_hidden=(64, 32), n_targets: int = 1, nonneg: bool = False):
        super().__init__()
        self.config = dict(embedding=embedding, d=d, n_conv=n_conv, descriptors=descriptors,
                           out_hidden=list(out_hidden), n_targets=n_targets, nonneg=nonneg)
        self.encoder = CGCNNEncoder(embedding, d, n_conv, descriptors)
        self.head = ResidualMLP(d, out_hidden, n_targets)
        self.nonneg = nonneg

    def forward(self, batch) -> torch.Tensor:
        """Predictions for a ``BimodalBatch`` whose rows all have a structure."""
        if batch.graphs is None or batch.graphs.n != batch.n:
            raise ValueError("CGCNN needs a structure for every row")
        out = self.head(self.encoder(batch.graphs))
        return torch.relu(out) if self.nonneg else out
