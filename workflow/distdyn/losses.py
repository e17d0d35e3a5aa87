"""Distillation objectives exactly as paper.md section 3.

total = (1 - alpha) * CE_ls(z_s, y) + alpha * tau^2 * KL(p_t || p_s) + feature_weight * L_feat
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_METHODS = ("spectral", "projector", "mse")


def needs_teacher(method: str) -> bool:
    """Every method but the no-KD baseline (none) reads the teacher."""
    return method != "none"


def pool_channels(ft: torch.Tensor, channels: int) -> torch.Tensor:
    """Average groups of adjacent teacher channels down to `channels` (no-op when already narrow enough).

    The authors call adaptive_avg_pool3d on the 4-D [B, C, H, W] tensor, which treats
    it as one unbatched (C, D, H, W) volume and so pools dim 1, the channels.
    """
    if ft.shape[1] <= channels:
        return ft
    return F.adaptive_avg_pool3d(ft, (channels, None, None))


def spectral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """MSE between real and imaginary parts of the ortho rfft2 over (H, W), teacher pooled to the student's width."""
    ft = pool_channels(ft, fs.shape[1])
    spec_s = torch.view_as_real(torch.fft.rfft2(fs.float(), norm="ortho"))
    spec_t = torch.view_as_real(torch.fft.rfft2(ft.float(), norm="ortho"))
    return F.mse_loss(spec_s, spec_t)


def pooled_mse_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Plain spatial MSE after channel pooling."""
    return F.mse_loss(fs.float(), pool_channels(ft, fs.shape[1]).float())


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


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    base: torch.Tensor
    feat: torch.Tensor
    dist: torch.Tensor


class DistillationLoss(nn.Module):
    """CE + logit KD + feature loss over the selected (student block, teacher block) pairs."""

    def __init__(self, method: str, pairs: list[tuple[int, int]], *, alpha: float, tau: float,
                 feature_weight: float, label_smoothing: float, widths: tuple[int, int] | None = None,
                 projector_trainable: bool = True):
        super().__init__()
        if method not in ("none", "logit", *FEATURE_METHODS):
            raise ValueError(f"unknown distillation method {method!r}")
        self.method = method
        self.pairs = [tuple(p) for p in pairs] if method in FEATURE_METHODS else []
        self.alpha = 0.0 if method == "none" else alpha
        self.tau = tau
        self.feature_weight = feature_weight
        self.label_smoothing = label_smoothing
        self.projectors = nn.ModuleList()
        if method == "projector":
            c_s, c_t = widths
            self.projectors.extend(ProjectorPair(c_s, c_t) for _ in self.pairs)
            self.projectors.requires_grad_(projector_trainable)

    @property
    def student_indices(self) -> list[int]:
        return sorted({s for s, _ in self.pairs})

    @property
    def teacher_indices(self) -> list[int]:
        return sorted({t for _, t in self.pairs})

    def feature_loss(self, fs: dict[int, torch.Tensor], ft: dict[int, torch.Tensor]) -> torch.Tensor:
        losses = []
        for i, (s, t) in enumerate(self.pairs):
            if self.method == "spectral":
                losses.append(spectral_loss(fs[s], ft[t]))
            elif self.method == "mse":
                losses.append(pooled_mse_loss(fs[s], ft[t]))
            else:
                losses.append(self.projectors[i](fs[s], ft[t]))
        return torch.stack(losses).mean()

    def forward(self, logits_s: torch.Tensor, labels: torch.Tensor, logits_t: torch.Tensor | None = None,
                feats_s: dict[int, torch.Tensor] | None = None, feats_t: dict[int, torch.Tensor] | None = None
                ) -> LossTerms:
        zero = logits_s.new_zeros((), dtype=torch.float32)
        base = (1.0 - self.alpha) * F.cross_entropy(logits_s.float(), labels, label_smoothing=self.label_smoothing)
        dist = zero
        if self.alpha > 0:
            log_ps = F.log_softmax(logits_s.float() / self.tau, dim=1)
            log_pt = F.log_softmax(logits_t.float() / self.tau, dim=1)
            kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
            dist = self.alpha * self.tau ** 2 * kl
        feat = self.feature_weight * self.feature_loss(feats_s, feats_t) if self.pairs else zero
        return LossTerms(base + dist + feat, base, feat, dist)
