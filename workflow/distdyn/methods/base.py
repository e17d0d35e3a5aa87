"""The base class of a distillation method, and what the paper's methods share."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import Param  # noqa: F401 - a method module's one import for its declaration


class Method(nn.Module):
    """The feature term of a distillation loss over its (student block, teacher block) pairs.

    A subclass declares (as class attributes): `name` (its registry name; register it with
    distdyn.methods.register_method), `params` ({name: Param}), `reads_teacher`, `uses_pairs`
    (whether a setting gives it `layers`), `roles` (the roles its pairs can play; `pair_roles` says
    which pair plays which), `parts` (the submodules holding its trainable parameters, which train
    with the student), `narrow_student` (it pools the teacher's channels to the student's width, so
    the student must not be wider) and `feature_weight` (its default weight, where not
    distill.feature_weight). It is built with the setting's pairs, the (student, teacher) widths and
    its parameters as keywords, and called with the student's and the teacher's block outputs
    ({block: [B, C, H, W]}, prefix tokens dropped, before the final norm); it returns the term as a
    scalar, which distdyn.losses weights by feature_weight. Random draws (torch.rand, ...) come
    from the student's own RNG stream.
    """

    name: str | None = None
    params: dict = {}
    reads_teacher = True
    uses_pairs = True
    roles: tuple[str, ...] = ("align",)
    parts: tuple[str, ...] = ()
    narrow_student = False
    feature_weight: float | None = None

    def __init__(self, pairs, widths: tuple[int, int] | None, **params):
        super().__init__()
        self.pairs = [tuple(p) for p in pairs]
        self.widths = widths
        for name, value in params.items():
            setattr(self, name, value)

    @classmethod
    def pair_roles(cls, pairs) -> list[str]:
        """The role of each pair, in order (the first declared role for all, unless a method says otherwise)."""
        return [cls.roles[0]] * len(pairs)

    @classmethod
    def check_pairs(cls, pairs) -> str | None:
        """What is wrong with these pairs for this method (None: nothing); the config check reports it."""
        return None

    def forward(self, fs: dict[int, torch.Tensor], ft: dict[int, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class PairwiseMethod(Method):
    """A method whose term is the mean over its pairs of one loss per pair (the paper's methods)."""

    def pair_loss(self, i: int, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, fs, ft):
        return torch.stack([self.pair_loss(i, fs[s], ft[t]) for i, (s, t) in enumerate(self.pairs)]).mean()


def pool_channels(ft: torch.Tensor, channels: int) -> torch.Tensor:
    """Average groups of adjacent teacher channels down to `channels` (no-op when already narrow enough).

    The authors call adaptive_avg_pool3d on the 4-D [B, C, H, W] tensor, which treats
    it as one unbatched (C, D, H, W) volume and so pools dim 1, the channels.
    """
    if ft.shape[1] <= channels:
        return ft
    return F.adaptive_avg_pool3d(ft, (channels, None, None))


def tokens(f: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] block output as [B, H*W, C] tokens (row-major grid order)."""
    return f.flatten(2).transpose(1, 2)
