"""The run's settings as the claims see them (early, late, ... aligned; the logit-KD reference) and the
knobs of the rules."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..methods import PAPER_FEATURE_METHODS as FEATURE_METHODS  # the paper's claims judge its methods only
from ..schema import schema_default


def _config(key: str):
    """A knob's default: the config schema's (claims.KEY), its one home."""
    return field(default_factory=lambda: schema_default(f"claims.{key}"))


@dataclass
class Tolerances:
    """Knobs of the rules (the package docstring); all can be passed to `evaluate_claims` as keywords."""

    level: float = _config("level")  # two-sided level of every interval
    neutral_tolerance: float = _config("neutral_tolerance")  # C8: accuracy points
    noise_floor: float | None = _config("noise_floor")  # one-seed rule for accuracy (points); None: inconclusive
    entropy_noise_floor: float | None = _config("entropy_noise_floor")  # one-seed rule for C12 (bits)
    loss_ratio_floor: float | None = _config("loss_ratio_floor")  # one-seed rule for C11 (late/early loss ratio)
    early_fraction: float = _config("early_fraction")  # C10: the early window, as a fraction of the epochs
    reference: str | None = None  # the logit-KD setting (default: "logit" or the first logit setting)

    def __post_init__(self):
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), not {self.level}")
        if self.neutral_tolerance <= 0:
            raise ValueError(f"neutral_tolerance must be > 0, not {self.neutral_tolerance}")
        if not 0 < self.early_fraction <= 1:
            raise ValueError(f"early_fraction must be in (0, 1], not {self.early_fraction}")
        if self.loss_ratio_floor is not None and self.loss_ratio_floor <= 1:
            raise ValueError(f"loss_ratio_floor must be > 1, not {self.loss_ratio_floor}")


def classify_setting(spec: dict, student_depth: int) -> str:
    """'none', 'logit', 'early', 'late', 'early_late' or 'other' (the package docstring)."""
    method = spec.get("method", "none")
    if method in ("none", "logit"):
        return method
    pairs = spec.get("pairs") or []
    last = int(student_depth) - 1
    if method not in FEATURE_METHODS or not pairs or last <= 0:
        return "other"
    blocks = {int(p[0]) for p in pairs}
    if blocks == {0}:
        return "early"
    if blocks == {last}:
        return "late"
    if blocks == {0, last}:
        return "early_late"
    return "other"


def pairs_text(spec: dict) -> str:
    """'0<->0, 5<->7' (student<->teacher blocks, 0-based); '' without pairs."""
    return ", ".join(f"{int(s)}<->{int(t)}" for s, t in (spec.get("pairs") or []))


def describe_setting(name: str, spec: dict) -> str:
    pairs = pairs_text(spec)
    return f"{name} ({spec.get('method', 'none')}" + (f", blocks s<->t {pairs})" if pairs else ")")


def reference_setting(settings: dict, reference: str | None = None) -> str | None:
    if reference is not None:
        return reference if reference in settings else None
    if settings.get("logit", {}).get("method") == "logit":
        return "logit"
    return next((n for n, s in settings.items() if s.get("method") == "logit"), None)
