"""COSNet: Roost(composition) and de-CGCNN(structure) fused by normalised, learnt weights.

w'_c = softplus(MLP_c(C)), w'_s = softplus(MLP_s(S)) · p_s with p_s = 0 for a missing
structure; w = w' / (w'_c + w'_s). The fused M = C·w_c + S·w_s (sum) or [C·w_c, S·w_s]
(concatenation) goes through an update MLP and a residual output MLP. A missing structure is a
zero placeholder for S whose weight is exactly 0, so it never contributes; rows that carry a
structure but p_s = 0 (composition-only mode) are masked the same way.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cosynth.models.cgcnn.model import CGCNNEncoder
from cosynth.models.layers import ConfiguredModule, ResidualMLP, mlp
from cosynth.models.roost.model import RoostEncoder
from cosynth.represent.composition import DEFAULT_EMBEDDING


class COSNet(ConfiguredModule):
    def __init__(self, embedding: str = DEFAULT_EMBEDDING, d: int = 64, roost_layers: int = 3, heads: int = 3,
                 roost_hidden: int = 128, n_conv: int = 3, descriptors: bool = True, weight_hidden=(64, 32),
                 scalar_weight: bool = True, concat: bool = False, update_hidden: int = 64, out_hidden=(64, 32),
                 n_targets: int = 1, nonneg: bool = False):
        super().__init__()
        self.config = dict(embedding=embedding, d=d, roost_layers=roost_layers, heads=heads,
                           roost_hidden=roost_hidden, n_conv=n_conv, descriptors=descriptors,
                           weight_hidden=list(weight_hidden), scalar_weight=scalar_weight, concat=concat,
                           update_hidden=update_hidden, out_hidden=list(out_hidden), n_targets=n_targets,
                           nonneg=nonneg)
        self.comp_encoder = RoostEncoder(embedding, d, roost_layers, heads, roost_hidden)
        self.struct_encoder = CGCNNEncoder(embedding, d, n_conv, descriptors)
        w_out = 1 if scalar_weight else d
        self.weight_c = mlp([d, *weight_hidden, w_out])
        self.weight_s = mlp([d, *weight_hidden, w_out])
        self.update = mlp([2 * d if concat else d, update_hidden, d])
        self.head = ResidualMLP(d, out_hidden, n_targets)
        self.concat, self.nonneg, self.d = concat, nonneg, d

    def parts(self, batch) -> dict[str, torch.Tensor]:
        """C, S, the normalised weights and the prediction of a ``BimodalBatch``."""
        C = self.comp_encoder(batch.comp)
        S = C.new_zeros(batch.n, self.d)
        if batch.graphs is not None and batch.graphs.n > 0:
            S = S.index_copy(0, batch.graph_rows, self.struct_encoder(batch.graphs))
        present = batch.present.to(C.dtype).unsqueeze(1)
        wc = F.softplus(self.weight_c(C))
        # the structure-weight MLP sees only rows whose structure is present, so placeholders
        # never enter its batch statistics either; the others get w'_s = 0 exactly
        ws = C.new_zeros(wc.shape)
        on = torch.nonzero(batch.present > 0, as_tuple=True)[0]
        if len(on):
            ws = ws.index_copy(0, on, F.softplus(self.weight_s(S[on])))
        ws = ws * present
        total = wc + ws
        wc, ws = wc / total, ws / total
        Sw = S * ws  # exactly zero where p_s = 0, whatever the placeholder
        M = torch.cat([C * wc, Sw], dim=1) if self.concat else C * wc + Sw
        out = self.head(self.update(M))
        if self.nonneg:
            out = torch.relu(out)
        return {"C": C, "S": S, "w_c": wc, "w_s": ws, "out": out}

    def forward(self, batch) -> torch.Tensor:
        return self.parts(batch)["out"]
