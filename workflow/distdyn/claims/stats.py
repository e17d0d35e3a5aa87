"""The statistics of the verdicts: a difference over seeds with its interval (paired t when both sides have
the same seeds, Welch otherwise), P(A > B) with its bootstrap interval, the seeds a claim needs, McNemar's
exact test of two trained models, the rules that turn an interval into a verdict, and how numbers are
written in the evidence. Every test is scipy's; this module only picks which and words it."""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE = "holds", "does not hold", "inconclusive", "not testable"
VERDICTS = (HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)
POWER = 0.8  # the power at which `seeds_needed` decides a claim
MAX_SEEDS = 10_000  # `seeds_needed` looks no further
BOOTSTRAP_RESAMPLES = 9999  # scipy.stats.bootstrap's default, with a fixed generator: the same interval every run


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t for real df > 0 (df = inf: the normal)."""
    return float(stats.t.ppf(p, df))


@dataclass
class Diff:
    """a - b over seeds: the means, the difference and its interval (NaN when there is none), the sd the
    interval rests on, and P(A > B) with its bootstrap interval."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    method: str  # "paired t", "welch", "noise floor" or "one seed"
    df: float = math.nan
    sd: float = math.nan  # paired t: sd of the per-seed differences; welch: sqrt((sd_a^2 + sd_b^2) / 2)
    p_better: float = math.nan  # P(A > B) at a new seed (ties count half)
    p_better_low: float = math.nan
    p_better_high: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def paired(self) -> bool:
        return self.method == "paired t"


def _values(x) -> tuple[np.ndarray, pd.Index | None]:
    """Finite values and their seeds (None for a plain sequence: nothing to pair on)."""
    if isinstance(x, pd.Series):
        x = x.astype(float).dropna()
        return x.to_numpy(), x.index
    a = np.asarray(x, dtype=float)
    return a[~np.isnan(a)], None


def _p_better_paired(d, axis=-1):
    return np.mean((d > 0) + 0.5 * (d == 0), axis=axis)


def _p_better_unpaired(a, b, axis=-1):
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    gt = a[..., :, None] > b[..., None, :]
    eq = a[..., :, None] == b[..., None, :]
    return np.mean(gt + 0.5 * eq, axis=(-2, -1))


def p_better(a, b, level: float = 0.95, paired: bool = True) -> tuple[float, float, float]:
    """P(A > B) and its percentile bootstrap interval at `level` (Bouthillier et al. 2021, "Accounting for
    variance in machine learning benchmarks"): paired, the share of seeds at which A beats B; unpaired, the
    share of all (a, b) pairs, i.e. the Mann-Whitney U over n_a * n_b. Ties count half."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():  # a sample with no spread: the interval is the point, which is right
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        if paired:
            d = a - b
            point = float(_p_better_paired(d))
            ci = stats.bootstrap((d,), _p_better_paired, confidence_level=level, method="percentile",
                                 n_resamples=BOOTSTRAP_RESAMPLES, rng=rng).confidence_interval
        else:
            point = float(stats.mannwhitneyu(a, b).statistic / (len(a) * len(b)))
            ci = stats.bootstrap((a, b), _p_better_unpaired, confidence_level=level, method="percentile",
                                 paired=False, n_resamples=BOOTSTRAP_RESAMPLES, rng=rng).confidence_interval
    return point, float(ci.low), float(ci.high)


def compare(a, b, level: float = 0.95, floor: float | None = None) -> Diff:
    """Mean difference a - b. Two pd.Series indexed by seed with the same seeds (>= 2): the paired t interval
    (scipy.stats.ttest_rel); otherwise with >= 2 values each the Welch interval (ttest_ind, equal_var=False);
    with one value on a side, +-floor if given, else no interval."""
    (a, seeds_a), (b, seeds_b) = _values(a), _values(b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("compare needs at least one value on each side")
    paired = seeds_a is not None and seeds_b is not None and len(a) >= 2 and set(seeds_a) == set(seeds_b)
    if paired:  # the same order of seeds on both sides
        order = sorted(seeds_a)
        a = pd.Series(a, index=seeds_a)[order].to_numpy()
        b = pd.Series(b, index=seeds_b)[order].to_numpy()
    ma, mb = float(a.mean()), float(b.mean())
    d = ma - mb
    base = {"n_a": len(a), "n_b": len(b), "mean_a": ma, "mean_b": mb, "diff": d}
    if len(a) < 2 or len(b) < 2:
        if floor is not None:
            return Diff(**base, low=d - floor, high=d + floor, method="noise floor")
        return Diff(**base, low=math.nan, high=math.nan, method="one seed")
    method = "paired t" if paired else "welch"
    sd = float(np.std(a - b, ddof=1)) if paired else math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    better = p_better(a, b, level, paired)
    if sd == 0:  # no spread at all: the interval is the point (scipy's would be NaN)
        return Diff(**base, low=d, high=d, method=method, df=math.inf, sd=0.0, p_better=better[0],
                    p_better_low=better[1], p_better_high=better[2])
    res = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence_level=level)
    return Diff(**base, low=float(ci.low), high=float(ci.high), method=method, df=float(res.df), sd=sd,
                p_better=better[0], p_better_low=better[1], p_better_high=better[2])


# ---------------------------------------------------------------- how many seeds


def power(effect: float, sd: float, n, level: float = 0.95, paired: bool = True, tolerance: float | None = None):
    """The probability that a run of n seeds (per side) decides the claim, from scipy's noncentral t.

    Directional (tolerance None): a two-sided t test at 1 - level rejects 0, i.e. the interval excludes 0
    (paired: df n - 1, noncentrality effect / sd * sqrt(n); unpaired, equal n: df 2n - 2, effect / sd *
    sqrt(n / 2)). Neutral (tolerance t): the interval at `level` lies within +-t (two one-sided tests at
    (1 - level) / 2 each; the lower bound 1 - P(miss below) - P(miss above) of scipy's noncentral t marginals).
    """
    n = np.asarray(n, dtype=float)
    df = n - 1 if paired else 2 * n - 2
    scale = np.sqrt(n) / sd if paired else np.sqrt(n / 2) / sd
    q = stats.t.ppf(1 - (1 - level) / 2, df)
    # Upper tails only (t with noncentrality -c is the mirror of +c): scipy's nct.cdf far in the lower tail
    # can return NaN where the probability is below 1e-20.
    if tolerance is None:
        nc = abs(effect) * scale
        wrong_side = np.nan_to_num(stats.nct.sf(q, df, -nc), nan=0.0)  # rejecting on the other side: < alpha / 2
        return stats.nct.sf(q, df, nc) + wrong_side
    low_ok = stats.nct.sf(q, df, (effect + tolerance) * scale)  # the lower bound above -tolerance
    high_ok = stats.nct.sf(q, df, (tolerance - effect) * scale)  # the upper bound below +tolerance
    return np.clip(low_ok + high_ok - 1, 0, 1)


def seeds_needed(effect: float, sd: float, level: float = 0.95, paired: bool = True,
                 tolerance: float | None = None, target: float = POWER) -> int | None:
    """The fewest seeds (per side) at which `power` reaches `target` (80 %) for a true difference `effect`
    with per-seed sd `sd`; None when no number is possible (sd NaN, a zero effect for a directional claim, an
    effect outside the tolerance for a neutral one) or it is above MAX_SEEDS."""
    if sd is None or not np.isfinite(sd) or effect is None or not np.isfinite(effect):
        return None
    if tolerance is None and effect == 0 or tolerance is not None and abs(effect) >= tolerance:
        return None
    if sd == 0:
        return 2
    n = np.arange(2, MAX_SEEDS + 1)
    with np.errstate(all="ignore"):
        ok = np.flatnonzero(power(effect, sd, n, level, paired, tolerance) >= target)
    return int(n[ok[0]]) if len(ok) else None


# ---------------------------------------------------------------- one seed: two trained models


@dataclass
class McNemar:
    """McNemar's exact test of two models on the same images: a_only = images only A gets right, b_only =
    only B; p from the binomial test of a_only out of a_only + b_only at 1/2 (scipy.stats.binomtest)."""

    images: int
    a_only: int
    b_only: int
    p: float


def mcnemar(correct_a, correct_b) -> McNemar:
    """McNemar's exact test on two per-image correctness arrays (the same images, in the same order)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"per-image correctness of different shapes: {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if a_only + b_only == 0 else float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return McNemar(len(a), a_only, b_only, p)


# ---------------------------------------------------------------- intervals to verdicts


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


def all_of(verdicts: list[tuple[str, str]]) -> tuple[str, str]:
    """One verdict for a claim made of parts (C10): holds if every part holds, does not hold if any part
    does not, else inconclusive."""
    if all(v == HOLDS for v, _ in verdicts):
        return HOLDS, ""
    if any(v == NOT_HOLD for v, _ in verdicts):
        return NOT_HOLD, ""
    return INCONCLUSIVE, "; ".join(sorted({q for _, q in verdicts if q}))


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


TEST_NAMES = {"paired t": "paired t (same seeds)", "welch": "Welch t (seeds not matched)"}


def describe_diff(diff: Diff, unit: str, digits: int, level: float) -> str:
    """'-0.80 pts (3 vs 3 seeds; paired t (same seeds) 95% CI [-1.30, -0.30], df 2; P(A>B) 0.00 [0.00, 0.00])'."""
    seeds = f"{diff.n_a} vs {diff.n_b} {plural(max(diff.n_a, diff.n_b))}"
    head = f"{fmt(diff.diff, digits, True)}{' ' + unit if unit else ''} ({seeds}"
    pct = f"{100 * level:g}%"
    if diff.method in TEST_NAMES:
        df = "inf" if math.isinf(diff.df) else f"{diff.df:.1f}"
        return (f"{head}; {TEST_NAMES[diff.method]} {pct} CI [{fmt(diff.low, digits, True)}, "
                f"{fmt(diff.high, digits, True)}], df {df}; P(A>B) {fmt(diff.p_better)} "
                f"[{fmt(diff.p_better_low)}, {fmt(diff.p_better_high)}])")
    if diff.method == "noise floor":
        return f"{head}; difference +- noise floor: [{fmt(diff.low, digits, True)}, {fmt(diff.high, digits, True)}])"
    return f"{head}; no interval)"
