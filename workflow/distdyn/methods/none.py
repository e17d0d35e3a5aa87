"""none: no distillation, the student trains on the labels alone (cross-entropy with label smoothing)."""
from __future__ import annotations

from . import register_method
from .base import Method


@register_method
class NoKD(Method):
    """Cross-entropy only: no teacher, no pairs (the no-KD baseline)."""

    name = "none"
    reads_teacher = False
    uses_pairs = False
    roles = ()
