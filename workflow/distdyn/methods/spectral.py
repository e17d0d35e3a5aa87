"""spectral: SpectralKD's feature loss (paper.md 3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import register_method
from .base import PairwiseMethod, pool_channels


def spectral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """MSE between real and imaginary parts of the ortho rfft2 over (H, W), teacher pooled to the student's width."""
    ft = pool_channels(ft, fs.shape[1])
    spec_s = torch.view_as_real(torch.fft.rfft2(fs.float(), norm="ortho"))
    spec_t = torch.view_as_real(torch.fft.rfft2(ft.float(), norm="ortho"))
    return F.mse_loss(spec_s, spec_t)


@register_method
class SpectralKD(PairwiseMethod):
    """MSE of the 2-D spatial spectra (ortho rfft2), teacher channels pooled to the student's width; mean over pairs."""

    name = "spectral"
    narrow_student = True

    def pair_loss(self, i, fs, ft):
        return spectral_loss(fs, ft)
