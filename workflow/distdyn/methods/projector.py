"""projector: ProjectorKD (FitNet-style), paper.md 3.4."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import schema_default
from . import Param, register_method
from .base import PairwiseMethod


class ProjectorPair(nn.Module):
    """Per-token Linear(C_s -> C_t), BatchNorm on both sides, MSE (paper.md 3.4).

    The BatchNorms always use batch statistics, as in the authors' code, where the
    criterion module stays in train mode.
    """

    def __init__(self, c_s: int, c_t: int):
        super().__init__()
        self.proj = nn.Linear(c_s, c_t)
        self.bn_s = nn.BatchNorm2d(c_t)
        self.bn_t = nn.BatchNorm2d(c_t)

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        ps = self.proj(fs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        ns = F.batch_norm(ps, None, None, self.bn_s.weight, self.bn_s.bias, training=True, eps=self.bn_s.eps)
        nt = F.batch_norm(ft, None, None, self.bn_t.weight, self.bn_t.bias, training=True, eps=self.bn_t.eps)
        return F.mse_loss(ns.float(), nt.float())


@register_method
class ProjectorKD(PairwiseMethod):
    """Per pair a Linear(C_s -> C_t) projector and BatchNorm on both sides, then MSE; mean over pairs."""

    name = "projector"
    # Also settable for every setting as distill.projector_trainable (its default's home), or per setting.
    params = {"projector_trainable": Param(bool, schema_default("distill.projector_trainable"),
                                           "train the projector and BN affine with the student; false reproduces "
                                           "the authors' frozen random projector (paper.md 3.4)")}
    parts = ("projectors",)

    def __init__(self, pairs, widths, projector_trainable: bool):
        super().__init__(pairs, widths, projector_trainable=projector_trainable)
        c_s, c_t = widths
        self.projectors = nn.ModuleList(ProjectorPair(c_s, c_t) for _ in self.pairs)
        self.projectors.requires_grad_(projector_trainable)

    def pair_loss(self, i, fs, ft):
        return self.projectors[i](fs, ft)
