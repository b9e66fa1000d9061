"""de-CGCNN: crystal-graph network enhanced with cell descriptors (Xie & Grossman 2018; Gong et al. 2023)."""

from cosynth.models.cgcnn.model import CGCNN, CGCNNEncoder

__all__ = ["CGCNN", "CGCNNEncoder"]
