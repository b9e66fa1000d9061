"""COSNet: composition–structure bimodal learning (Gong et al., arXiv 2309.04478)."""

from cosynth.models.cosnet.model import COSNet

__all__ = ["COSNet"]
