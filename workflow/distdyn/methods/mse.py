"""mse: plain feature MSE after channel pooling (paper.md 3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import register_method
from .base import PairwiseMethod, pool_channels


def pooled_mse_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Plain spatial MSE after channel pooling."""
    return F.mse_loss(fs.float(), pool_channels(ft, fs.shape[1]).float())


@register_method
class PooledMSE(PairwiseMethod):
    """Spatial MSE, teacher channels pooled to the student's width; mean over pairs."""

    name = "mse"
    narrow_student = True

    def pair_loss(self, i, fs, ft):
        return pooled_mse_loss(fs, ft)
