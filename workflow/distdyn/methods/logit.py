"""logit: logit KD alone (SoftKD, paper.md 3.1): cross-entropy and the KL term, no feature term."""
from __future__ import annotations

from . import register_method
from .base import Method


@register_method
class LogitKD(Method):
    """Cross-entropy + KL to the teacher's logits (distill.alpha, distill.tau), no feature pairs."""

    name = "logit"
    uses_pairs = False
    roles = ()
