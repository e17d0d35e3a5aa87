"""The distillation objective exactly as paper.md section 3, around a method's feature term.

total = (1 - alpha) * CE_ls(z_s, y) + alpha * tau^2 * KL(p_t || p_s) + feature_weight * L_feat

L_feat is the setting's method (distdyn.methods: one module each, looked up by name when the loss is
built). This module imports the registry only, no method: a training job's code is the engine's and
its own method's, and the teacher's (plain cross-entropy, method None) none of the methods'.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .methods import get_method, needs_teacher, resolve_params

__all__ = ["DistillationLoss", "LossTerms", "needs_teacher"]

# The paper's loss functions, at their old import path; they live in their methods' modules, which
# this module does not import (so that a method's edit re-runs only the settings using it).
_MOVED = {"spectral_loss": "spectral", "pooled_mse_loss": "mse", "ProjectorPair": "projector",
          "pool_channels": "base"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__package__}.methods.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    base: torch.Tensor
    feat: torch.Tensor
    dist: torch.Tensor


class DistillationLoss(nn.Module):
    """CE + logit KD + the method's feature term over the selected (student block, teacher block) pairs.

    `method`: a registered name or a user's `module:Class` / `file.py:Class` (None: plain cross-entropy,
    as the teacher's pretraining); `params`: the method's parameters (distdyn.methods.resolve_params).
    Without the teacher (method none) alpha is 0.
    """

    def __init__(self, method: str | None, pairs: list[tuple[int, int]], *, alpha: float, tau: float,
                 feature_weight: float, label_smoothing: float, widths: tuple[int, int] | None = None, **params):
        super().__init__()
        cls = get_method(method) if method is not None else None
        self.method = method if method is not None else "none"
        self.pairs = [tuple(p) for p in pairs] if cls is not None and cls.uses_pairs else []
        self.alpha = alpha if cls is not None and cls.reads_teacher else 0.0
        self.tau = tau
        self.feature_weight = feature_weight
        self.label_smoothing = label_smoothing
        self.feature = cls(self.pairs, widths, **resolve_params(cls, params)) if self.pairs else None

    @property
    def student_indices(self) -> list[int]:
        return sorted({s for s, _ in self.pairs})

    @property
    def teacher_indices(self) -> list[int]:
        return sorted({t for _, t in self.pairs})

    def feature_loss(self, fs: dict[int, torch.Tensor], ft: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.feature(fs, ft)

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
