"""The statistics of the verdicts: a difference of seed means with its interval, the rules that turn
it into a verdict, and how numbers are written in the evidence."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE = "holds", "does not hold", "inconclusive", "not testable"
VERDICTS = (HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t for real df > 0 (df = inf: the normal)."""
    return float(stats.t.ppf(p, df))


@dataclass
class Diff:
    """a - b: seed means, the difference and its interval (NaN when there is none)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    method: str  # "welch", "noise floor" or "one seed"
    df: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def compare(a, b, level: float = 0.95, floor: float | None = None) -> Diff:
    """Mean difference a - b with a Welch t interval (>= 2 values each), else +-floor, else no interval."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        raise ValueError("compare needs at least one value on each side")
    ma, mb = float(a.mean()), float(b.mean())
    d = ma - mb
    if len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return Diff(len(a), len(b), ma, mb, d, d, d, "welch", math.inf)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        half = t_quantile(1 - (1 - level) / 2, df) * se
        return Diff(len(a), len(b), ma, mb, d, d - half, d + half, "welch", df)
    if floor is not None:
        return Diff(len(a), len(b), ma, mb, d, d - floor, d + floor, "noise floor")
    return Diff(len(a), len(b), ma, mb, d, math.nan, math.nan, "one seed")


def directional(diff: Diff, sign: int) -> tuple[str, str]:
    """(verdict, qualifier) for the claim sign * (a - b) > 0."""
    if not diff.has_interval:
        return INCONCLUSIVE, "one seed"
    lo, hi = (diff.low, diff.high) if sign > 0 else (-diff.high, -diff.low)
    if lo > 0:
        return HOLDS, ""
    if hi < 0:
        return NOT_HOLD, ""
    return INCONCLUSIVE, "overlapping intervals"


def neutral(diff: Diff, tol: float) -> tuple[str, str]:
    """(verdict, qualifier) for the claim |a - b| <= tol."""
    if not diff.has_interval:
        return INCONCLUSIVE, "one seed"
    if -tol <= diff.low and diff.high <= tol:
        return HOLDS, ""
    if diff.low > tol or diff.high < -tol:
        return NOT_HOLD, ""
    return INCONCLUSIVE, "interval straddles the tolerance"


def combine(verdicts: list[tuple[str, str]]) -> tuple[str, str]:
    """One verdict for several comparisons: the common one if all agree, else inconclusive (mixed)."""
    kinds = {v for v, _ in verdicts}
    if len(kinds) == 1:
        kind = kinds.pop()
        quals = sorted({q for _, q in verdicts if q})
        return kind, "; ".join(quals)
    return INCONCLUSIVE, "mixed"


def diff_dict(diff: Diff) -> dict:
    """The comparison's fields for claims.json (NaN as None)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(diff).items()}


# ---------------------------------------------------------------- how numbers are written


def fmt(x: float, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def verdict_text(verdict: str, qualifier: str) -> str:
    return f"{verdict} ({qualifier})" if qualifier else verdict


def plural(n: int, word: str = "seed") -> str:
    return f"{word}{'s' if n > 1 else ''}"


def describe_diff(diff: Diff, unit: str, digits: int, level: float) -> str:
    """'-0.80 pts (3 vs 3 seeds; Welch 95% CI [-1.30, -0.30], df 3.9)'."""
    seeds = f"{diff.n_a} vs {diff.n_b} {plural(max(diff.n_a, diff.n_b))}"
    head = f"{fmt(diff.diff, digits, True)}{' ' + unit if unit else ''} ({seeds}"
    pct = f"{100 * level:g}%"
    if diff.method == "welch":
        df = "inf" if math.isinf(diff.df) else f"{diff.df:.1f}"
        return f"{head}; Welch {pct} CI [{fmt(diff.low, digits, True)}, {fmt(diff.high, digits, True)}], df {df})"
    if diff.method == "noise floor":
        return f"{head}; difference +- noise floor: [{fmt(diff.low, digits, True)}, {fmt(diff.high, digits, True)}])"
    return f"{head}; no interval)"
