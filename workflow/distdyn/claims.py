"""Verdicts on the paper's claims (paper.md section 1) from one run's tables.

    python -m distdyn.claims --layers layers.csv --accuracy accuracy.csv --curves curves.csv \\
        --settings-json '{"logit": {"method": "logit", "pairs": []}, ...}' \\
        --student-depth 6 --teacher-depth 8 --out claims.md [--json claims.json]

Claims tested here: C1 (U-shaped teacher entropy), C5 (late alignment below logit
KD), C8 (early alignment neutral), C9 (a projector does not rescue late
alignment), C10 (early speed-up, lower final accuracy), C11 (late features fit
worse than early ones), C12 (the entropy signature of late alignment). Every
record is {claim_id, claim, evidence, paper, verdict, qualifier, reason,
comparisons, settings_used}; `verdict` is one of "holds", "does not hold",
"inconclusive" or "not testable", and `qualifier` says why an inconclusive
verdict is inconclusive ("one seed", "overlapping intervals", ...).

Settings. Each setting has a `method` (none, logit, spectral, projector, mse)
and explicit 0-based (student_block, teacher_block) `pairs`. A feature setting
(spectral, projector, mse) is *early*-aligned if every pair uses student block
0, *late*-aligned if every pair uses the last student block, *early+late* if
its student blocks are exactly {0, last}, and *other* otherwise (also when the
student has a single block, where first and last coincide). The logit-KD
reference is the setting named "logit" if it has method logit, else the first
setting with method logit (override with `reference=`).

Rules (applied the same way to every claim):

* Never a verdict without numbers: every verdict other than "not testable"
  comes with evidence text holding the numbers it rests on; a record whose
  evidence has no digit is turned into "not testable".
* A claim whose settings are absent (not configured, or configured but with no
  rows in the table the claim reads) is "not testable", with the missing
  settings named; it is not a verdict.
* Accuracy comparisons use each run's final top-1 (`final_acc1`), one value
  per seed. With >= 2 seeds on both sides the statistic is the difference of
  the seed means and its Welch (unequal-variance) t interval at `level`
  (default 95 %, Welch-Satterthwaite degrees of freedom); seeds are *not*
  paired. A directional claim "holds" only if the interval excludes 0 in the
  claimed direction, "does not hold" if it excludes 0 in the opposite
  direction, and is "inconclusive (overlapping intervals)" otherwise.
* With one seed on either side there is no spread to judge a difference
  against, so the verdict is "inconclusive (one seed)" - unless the user states
  a run-to-run noise floor (`noise_floor` in accuracy points, `entropy_noise_floor`
  in bits): the interval is then the difference +- that floor and the same
  rules apply. (The authors' own logs put ImageNet-scale seed noise at about
  0.1-0.15 points; a small-scale run has to measure its own.)
* Neutrality (C8): "holds" if the whole interval of the difference lies within
  +-`neutral_tolerance` (default 1.0 point), "does not hold" if it lies wholly
  outside that band, "inconclusive" if it straddles a band edge.
* C1 uses the teacher's final entropy profile and its bootstrap intervals over
  probe images: "holds" if the minimum is at an interior layer and its interval
  lies below the intervals of both the first and the last layer; "does not
  hold" if the minimum is at the first or last layer (no interior dip);
  otherwise (intervals overlap, or no intervals were computed) "inconclusive".
  Beside it, as evidence only: the same rule on the entropy with the
  file-wide and with the per-layer histogram range (entropy_global,
  entropy_per_layer), and the outlier channels (outlier_ratio,
  outlier_channels) at the first, minimum and last layers and where the ratio
  is largest, so that a U made by a few huge channels widening the shared
  bins (paper.md 2.3, quirk 2) shows.
* C10: for each run the mean test top-1 over its first `early_fraction` (25 %)
  of epochs (epochs 1..ceil(0.25 E)); the early difference (feature-aligned
  minus logit) must be positive and the final top-1 difference negative, each
  by the rules above. Both hold -> holds; either the opposite -> does not hold.
* C11 compares the logged final weighted feature loss (`final_train_loss_feat`)
  of late- and early-aligned settings *of the same method* (loss scales differ
  between methods), late minus early, with the same interval rules. With one
  seed, a stated `loss_ratio_floor` r decides: late/early >= r holds, <= 1/r
  does not hold.
* C12 uses the per-seed minimum over layers of the student's final entropy
  profile (late-aligned minus logit; the claim is a deeper U, i.e. a lower
  minimum); mean entropy, the argmin layer, the U depth (lower end minus
  minimum) and the early-checkpoint entropy at the aligned layer are reported
  as evidence, as are the same numbers for early and early+late settings.
  Entropies of different models share no binning range (paper.md 2.3), so the
  comparison is of profile shapes as measured, not of information content.
* A claim tested on several settings (e.g. spectral and projector late
  alignment for C5) gets each setting's verdict; the claim's verdict is the
  common one when all agree, else "inconclusive (mixed)".
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from .errors import cli, read_table
from .io import read_spec, write_text

FEATURE_METHODS = ("spectral", "projector", "mse")
HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE = "holds", "does not hold", "inconclusive", "not testable"
VERDICTS = (HOLDS, NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)

# ---------------------------------------------------------------- the paper's side (paper.md sections 1 and 4)

CLAIMS = {
    "C1": "A trained ViT teacher's per-layer entropy is U-shaped over depth: it falls to an interior minimum "
          "(compression) and rises again towards the last layer (expansion).",
    "C5": "Aligning the student's last layer to the teacher's (on top of logit KD) gives a lower final top-1 "
          "than logit KD alone.",
    "C8": "Aligning only the first layer is neutral: the final top-1 stays within a small tolerance of logit KD.",
    "C9": "A projector (projector + BN MSE) does not rescue last-layer alignment: projector late alignment "
          "still ends below logit KD.",
    "C10": "Last-layer feature alignment speeds up early training (higher top-1 over the first quarter of "
           "epochs) but lowers the final top-1, relative to logit KD.",
    "C11": "The student fits the teacher's last-layer features worse than its first-layer features: the final "
           "feature loss is higher for late than for early alignment.",
    "C12": "Last-layer alignment changes the student's whole final entropy profile: a deeper U (lower minimum "
           "entropy) than under logit KD.",
}

PAPER = {
    "C1": "U-shape stated for the teacher CaiT-S24 (24 blocks); the teacher's own curve is not published. "
          "Student SoftKD DeiT-Tiny final: L1 2.43 -> min L4 1.80 -> L12 3.34 bits.",
    "C5": "SpectralKD-Last 76.79 vs SoftKD 76.95 (-0.16); ProjectorKD-Last 76.72 (-0.23) (DeiT-Tiny <- CaiT-S24, "
          "300 epochs, one seed each). At 500 epochs: 77.54 vs 77.95 (-0.41).",
    "C8": "SpectralKD-First 77.00 (+0.06); SpectralKD-First+Last 76.98 (+0.04); ProjectorKD-First 76.87 (-0.08) "
          "vs SoftKD 76.95; one seed each, differences <= 0.1 are within run-to-run noise.",
    "C9": "ProjectorKD-Last 76.72 vs SoftKD 76.95 (-0.23), the worst 300-epoch run (SpectralKD-Last 76.79). "
          "In the authors' code the projector is never trained (paper.md 3.4).",
    "C10": "SpectralKD-Last leads SoftKD by +3.56 points (mean top-1, epochs 0-24 of 300) and ends -0.16 "
           "(76.79 vs 76.95), crossing below around epoch 150; ProjectorKD-Last +0.97 early, -0.23 final.",
    "C11": "Final weighted feature loss: SpectralKD First 0.012 vs Last 0.456 (38x); ProjectorKD First 0.131 "
           "vs Last 0.241 (1.8x).",
    "C12": "SpectralKD-Last final entropy min 0.84 bits at L6 vs SoftKD 1.80 at L4 (mean over 12 layers 1.33 vs "
           "2.36); early on (epoch 30) the aligned L12 drops to 1.74 vs 2.83 at L11. SpectralKD-First pins L1 low "
           "early (1.12 at epoch 30), then relaxes (final mean 2.72).",
}


@dataclass
class Tolerances:
    """Knobs of the rules (module docstring); all can be passed to `evaluate_claims` as keywords."""

    level: float = 0.95  # two-sided level of every interval
    neutral_tolerance: float = 1.0  # C8: accuracy points
    noise_floor: float | None = None  # one-seed rule for accuracy (points); None: one seed is inconclusive
    entropy_noise_floor: float | None = None  # one-seed rule for C12 (bits)
    loss_ratio_floor: float | None = None  # one-seed rule for C11 (late/early loss ratio)
    early_fraction: float = 0.25  # C10: the early window, as a fraction of the epochs
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


# ---------------------------------------------------------------- settings


def classify_setting(spec: dict, student_depth: int) -> str:
    """'none', 'logit', 'early', 'late', 'early_late' or 'other' (module docstring)."""
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


def describe_setting(name: str, spec: dict) -> str:
    pairs = spec.get("pairs") or []
    text = ", ".join(f"{int(s)}<->{int(t)}" for s, t in pairs)
    return f"{name} ({spec.get('method', 'none')}" + (f", blocks s<->t {text})" if pairs else ")")


def reference_setting(settings: dict, reference: str | None = None) -> str | None:
    if reference is not None:
        return reference if reference in settings else None
    if settings.get("logit", {}).get("method") == "logit":
        return "logit"
    return next((n for n, s in settings.items() if s.get("method") == "logit"), None)


# ---------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function (any real df > 0)."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t for 0.5 <= p < 1 and real df > 0, by bisection on `t_cdf` (no scipy needed)."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p must be in [0.5, 1), not {p}")
    if math.isinf(df):
        from statistics import NormalDist
        return NormalDist().inv_cdf(p)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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


def fmt(x: float, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def describe_diff(diff: Diff, unit: str, digits: int, level: float) -> str:
    """'-0.80 pts (3 vs 3 seeds; Welch 95% CI [-1.30, -0.30], df 3.9)'."""
    seeds = f"{diff.n_a} vs {diff.n_b} seed{'s' if max(diff.n_a, diff.n_b) > 1 else ''}"
    head = f"{fmt(diff.diff, digits, True)}{' ' + unit if unit else ''} ({seeds}"
    pct = f"{100 * level:g}%"
    if diff.method == "welch":
        df = "inf" if math.isinf(diff.df) else f"{diff.df:.1f}"
        return f"{head}; Welch {pct} CI [{fmt(diff.low, digits, True)}, {fmt(diff.high, digits, True)}], df {df})"
    if diff.method == "noise floor":
        return f"{head}; difference +- noise floor: [{fmt(diff.low, digits, True)}, {fmt(diff.high, digits, True)}])"
    return f"{head}; no interval)"


def _diff_dict(diff: Diff) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(diff).items()}


# ---------------------------------------------------------------- reading the tables


def _students(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["role"] == "student"] if "role" in df.columns else df


def per_seed(df: pd.DataFrame, setting: str, column: str) -> pd.Series:
    """One value per seed (the last row per seed), NaN dropped."""
    if df is None or not {"setting", "seed", column} <= set(df.columns):
        return pd.Series(dtype=float)
    rows = _students(df)
    rows = rows[rows["setting"] == setting]
    return rows.groupby("seed")[column].last().astype(float).dropna()


def early_top1(curves: pd.DataFrame, setting: str, fraction: float) -> tuple[pd.Series, int, int]:
    """Per seed: mean test top-1 over epochs 1..ceil(fraction * E); also the window length and E."""
    if curves is None or not {"setting", "seed", "epoch", "test_acc1"} <= set(curves.columns):
        return pd.Series(dtype=float), 0, 0
    rows = _students(curves)
    rows = rows[(rows["setting"] == setting) & (rows["epoch"] >= 1)].dropna(subset=["test_acc1"])
    out, windows, totals = {}, [], []
    for seed, run in rows.groupby("seed"):
        total = int(run["epoch"].max())
        n = max(1, math.ceil(fraction * total))
        out[seed] = float(run.loc[run["epoch"] <= n, "test_acc1"].mean())
        windows.append(n)
        totals.append(total)
    return pd.Series(out, dtype=float), (max(windows) if windows else 0), (max(totals) if totals else 0)


def final_feature_loss(accuracy: pd.DataFrame, curves: pd.DataFrame, setting: str) -> pd.Series:
    """Per seed: `final_train_loss_feat` from accuracy.csv, else the last epoch's `train_loss_feat`."""
    values = per_seed(accuracy, setting, "final_train_loss_feat")
    needed = {"setting", "seed", "epoch", "train_loss_feat"}
    if len(values) == 0 and curves is not None and needed <= set(curves.columns):
        rows = _students(curves)
        rows = rows[rows["setting"] == setting].sort_values("epoch")
        values = rows.groupby("seed")["train_loss_feat"].last().astype(float).dropna()
    return values


def entropy_profiles(layers: pd.DataFrame, setting: str, checkpoint: str = "final") -> dict:
    """{seed: Series(layer -> entropy)} of a student setting's final (or earliest) checkpoint."""
    rows = layers[(layers["role"] == "student") & (layers["setting"] == setting) & (layers["metric"] == "entropy")]
    if checkpoint == "final":
        rows = rows[rows["checkpoint"] == "final"]
    else:
        rows = rows[rows["checkpoint"] != "final"]
    out = {}
    for seed, run in rows.groupby("seed"):
        if checkpoint != "final":
            run = run[run["epoch"] == run["epoch"].min()]
        prof = run.groupby("layer")["value"].mean().sort_index().dropna()
        if len(prof):
            out[seed] = prof
    return out


def teacher_entropy(layers: pd.DataFrame, metric: str = "entropy") -> pd.DataFrame:
    """The teacher's final profile of `metric` (default the entropy): layer, value, ci_low, ci_high (sorted by layer)."""
    rows = layers[(layers["role"] == "teacher") & (layers["metric"] == metric)]
    if len(rows) == 0:
        return rows
    final = rows[rows["checkpoint"] == "final"]
    rows = final if len(final) else rows[rows["epoch"] == rows["epoch"].max()]
    cols = [c for c in ("value", "ci_low", "ci_high") if c in rows.columns]
    return rows.groupby("layer")[cols].mean().sort_index().reset_index()


def profile_stats(prof: pd.Series) -> dict:
    """min, argmin layer, mean, first, last and the U depth (lower end minus minimum, 0 if monotone)."""
    v = prof.to_numpy(dtype=float)
    i = int(np.argmin(v))
    return {"min": float(v[i]), "argmin": int(prof.index[i]), "mean": float(v.mean()), "first": float(v[0]),
            "last": float(v[-1]), "u_depth": float(min(v[0], v[-1]) - v[i]), "layers": len(v)}


# ---------------------------------------------------------------- records


def _record(cid: str, evidence: str, verdict: str, qualifier: str, reason: str, comparisons=None,
            settings_used=None) -> dict:
    if verdict != NOT_TESTABLE and not re.search(r"\d", evidence or ""):
        verdict, qualifier, reason = NOT_TESTABLE, "", f"no numbers to base a verdict on ({reason})"
    return {"claim_id": cid, "claim": CLAIMS[cid], "evidence": evidence, "paper": PAPER[cid], "verdict": verdict,
            "qualifier": qualifier, "reason": reason, "comparisons": comparisons or [],
            "settings_used": settings_used or []}


def _not_testable(cid: str, reason: str, missing: list[str] | None = None) -> dict:
    if missing:
        reason = f"{reason}; missing: {', '.join(missing)}"
    return _record(cid, "", NOT_TESTABLE, "", reason)


def _verdict_text(v: str, q: str) -> str:
    return f"{v} ({q})" if q else v


class _Ctx:
    def __init__(self, layers, accuracy, curves, settings, student_depth, teacher_depth, tol: Tolerances):
        self.layers, self.accuracy, self.curves = layers, accuracy, curves
        self.settings = {str(k): dict(v) for k, v in settings.items()}
        self.student_depth, self.teacher_depth, self.tol = int(student_depth), int(teacher_depth), tol
        self.kind = {n: classify_setting(s, self.student_depth) for n, s in self.settings.items()}
        self.ref = reference_setting(self.settings, tol.reference)
        self.final = {n: per_seed(accuracy, n, "final_acc1") for n in self.settings}

    def named(self, kind: str, methods=FEATURE_METHODS) -> list[str]:
        return [n for n, k in self.kind.items() if k == kind and self.settings[n]["method"] in methods]

    def no_reference(self, cid: str) -> dict | None:
        if self.ref is None:
            want = self.tol.reference or "a logit-only setting (method: logit)"
            return _not_testable(cid, "the logit-KD reference is not configured", [want])
        if len(self.final[self.ref]) == 0:
            return _not_testable(cid, "the logit-KD reference has no final top-1 in accuracy.csv", [self.ref])
        return None

    def accuracy_claim(self, cid: str, targets: list[str], wanted: str, sign: int | None) -> dict:
        """Final top-1 of each target minus the reference: directional (sign) or neutral (sign None)."""
        if (r := self.no_reference(cid)) is not None:
            return r
        if not targets:
            return _not_testable(cid, f"no {wanted} setting is configured", [wanted])
        absent = [n for n in targets if len(self.final[n]) == 0]
        present = [n for n in targets if len(self.final[n])]
        if not present:
            return _not_testable(cid, f"no {wanted} setting has a final top-1 in accuracy.csv", absent)
        tol, lines, verdicts, comps = self.tol, [], [], []
        ref = self.final[self.ref]
        lines.append(f"- reference {describe_setting(self.ref, self.settings[self.ref])}: final top-1 "
                     f"{fmt(ref.mean())} (mean of {len(ref)} seed{'s' if len(ref) > 1 else ''}: "
                     f"{', '.join(fmt(x) for x in ref)})")
        for n in present:
            d = compare(self.final[n], ref, tol.level, tol.noise_floor)
            v = directional(d, sign) if sign is not None else neutral(d, tol.neutral_tolerance)
            verdicts.append(v)
            comps.append({"setting": n, "reference": self.ref, "quantity": "final_acc1", **_diff_dict(d),
                          "verdict": v[0], "qualifier": v[1]})
            lines.append(f"- {describe_setting(n, self.settings[n])}: final top-1 {fmt(d.mean_a)} vs "
                         f"{fmt(d.mean_b)}, difference {describe_diff(d, 'pts', 2, tol.level)} -> "
                         f"{_verdict_text(*v)}")
        verdict, qual = combine(verdicts)
        if sign is None:
            rule = (f"neutral means the {100 * tol.level:g}% interval of the difference lies within "
                    f"+-{tol.neutral_tolerance:g} pts")
        else:
            rule = (f"the claim needs the interval of the difference to lie {'above' if sign > 0 else 'below'} 0")
        reason = _reason(verdict, qual, rule, tol)
        if absent:
            reason += f" (configured but without results, left out: {', '.join(absent)})"
        return _record(cid, "\n".join(lines), verdict, qual, reason, comps, [self.ref, *present])


def _reason(verdict: str, qual: str, rule: str, tol: Tolerances) -> str:
    if qual == "one seed":
        return (f"one seed: {rule}, and a single run per setting gives no run-to-run spread to judge the difference "
                f"against (state a noise floor to apply one)")
    if qual == "mixed":
        return f"mixed: the settings tested disagree ({rule})"
    if verdict == HOLDS:
        return f"{rule}; it does"
    if verdict == NOT_HOLD:
        return f"{rule}; the interval lies wholly on the other side"
    return f"{qual}: {rule}; the interval does not decide it"


# ---------------------------------------------------------------- the claims


def _has_ci(t: pd.DataFrame) -> bool:
    return {"ci_low", "ci_high"} <= set(t.columns) and not t[["ci_low", "ci_high"]].isna().any().any()


def u_shape(t: pd.DataFrame) -> tuple[str, str, str]:
    """C1's rule on one teacher profile (>= 3 layers): (verdict, qualifier, reason)."""
    v, layer = t["value"].to_numpy(float), t["layer"].to_numpy()
    i = int(np.argmin(v))
    if i in (0, len(v) - 1):
        end = "first" if i == 0 else "last"
        return NOT_HOLD, "", f"the minimum is at the {end} layer (L{layer[i]}), so there is no interior dip"
    if not _has_ci(t):
        return (INCONCLUSIVE, "no intervals", f"the minimum is interior (L{layer[i]}) but no bootstrap intervals were "
                "computed (metrics.bootstrap = 0), so it cannot be told from noise")
    below_first = t.ci_high.iloc[i] < t.ci_low.iloc[0]
    below_last = t.ci_high.iloc[i] < t.ci_low.iloc[-1]
    if below_first and below_last:
        return (HOLDS, "", f"the minimum is interior (L{layer[i]}) and its interval lies below the intervals of both "
                "the first and the last layer")
    ends = [e for e, ok in (("first", below_first), ("last", below_last)) if not ok]
    return (INCONCLUSIVE, "overlapping intervals", f"overlapping intervals: the minimum is interior (L{layer[i]}) but "
            f"its interval overlaps the {' and '.join(ends)} layer's")


ENTROPY_RANGES = {"entropy_global": "the file-wide histogram range, as the authors' code",
                  "entropy_per_layer": "each layer's own histogram range"}


def _range_and_outliers(ctx: _Ctx, t: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """Evidence beside C1's verdict: the same rule on both histogram ranges, and the outlier channels
    (paper.md 2.3, quirk 2) at the first, minimum and last layers and where they are largest."""
    lines, comps, verdicts = [], [], {}
    for metric, label in ENTROPY_RANGES.items():
        r = teacher_entropy(ctx.layers, metric)
        if len(r) < 3:
            continue
        v = r["value"].to_numpy(float)
        j = int(np.argmin(v))
        same = len(r) == len(t) and np.allclose(v, t["value"].to_numpy(float), rtol=0, atol=0)
        verdict, qual, _ = u_shape(r)
        verdicts[metric] = verdict
        lines.append(f"- {metric} ({label}{'; the entropy above' if same else ''}): first "
                     f"{fmt(v[0], 3)}, minimum L{r.layer.iloc[j]} {fmt(v[j], 3)}, last {fmt(v[-1], 3)} bits; "
                     f"U-shape by the same rule: {_verdict_text(verdict, qual)}")
        comps.append({"quantity": metric, "layer_min": int(r.layer.iloc[j]), "min": float(v[j]), "first": float(v[0]),
                      "last": float(v[-1]), "verdict": verdict, "qualifier": qual})
    ratio = teacher_entropy(ctx.layers, "outlier_ratio").set_index("layer")["value"]
    count = teacher_entropy(ctx.layers, "outlier_channels").set_index("layer")["value"]
    if ratio.notna().any():
        layer = t["layer"].to_numpy()
        i = int(np.argmin(t["value"].to_numpy(float)))
        top = int(ratio.idxmax())
        marks = {}
        for lay, what in ((layer[0], "first"), (layer[i], "minimum"), (layer[-1], "last"), (top, "largest")):
            marks.setdefault(int(lay), []).append(what)

        def show(lay):
            n = count.get(lay, np.nan)
            return (f"L{lay} ({', '.join(marks[lay])}) {fmt(ratio.get(lay, np.nan))}"
                    + (f" ({int(n)} channel{'s' if n != 1 else ''})" if np.isfinite(n) else ""))

        lines.append("- outlier channels (largest channel's mean |x| over the median channel's; channels above "
                     "metrics.outlier_multiple times the median): " + ", ".join(show(lay) for lay in sorted(marks)))
        comps += [{"quantity": "outlier_ratio", "layer": lay, "value": float(ratio.get(lay, np.nan)),
                   "outlier_channels": float(count.get(lay, np.nan))} for lay in sorted(marks)]
    if len(verdicts) == 2 and len(set(verdicts.values())) > 1:
        lines.append(f"- the U-shape depends on the histogram range ({verdicts['entropy_global']} with the file-wide "
                     f"range, {verdicts['entropy_per_layer']} with each layer's own): with the shared range, large "
                     "channels in the layers that set it widen every layer's bins (paper.md 2.3, quirk 2)")
    return lines, comps


def claim_c1(ctx: _Ctx) -> dict:
    t = teacher_entropy(ctx.layers)
    if len(t) == 0:
        return _not_testable("C1", "no teacher entropy rows in layers.csv", ["teacher"])
    if len(t) < 3:
        return _not_testable("C1", f"the teacher has {len(t)} layer(s); a U-shape needs at least 3")
    v = t["value"].to_numpy(float)
    i = int(np.argmin(v))
    layer = t["layer"].to_numpy()
    has_ci = _has_ci(t)

    def show(j):
        ci = f" [{fmt(t.ci_low.iloc[j], 3)}, {fmt(t.ci_high.iloc[j], 3)}]" if has_ci else ""
        return f"L{layer[j]} {fmt(v[j], 3)}{ci}"

    profile = ", ".join(f"L{layer[j]} {fmt(v[j], 3)}" for j in range(len(v)))
    steps = np.diff(v)
    shape = ("monotone increasing" if (steps >= 0).all() else "monotone decreasing" if (steps <= 0).all()
             else "not monotone")
    lines = [f"- teacher final entropy profile (bits): {profile}",
             f"- first {show(0)}; minimum {show(i)}; last {show(len(v) - 1)}"
             + (" (bootstrap intervals over probe images)" if has_ci else " (no bootstrap intervals)"),
             f"- U depth (lower end minus minimum): {fmt(min(v[0], v[-1]) - v[i], 3)} bits; profile {shape}"]
    comps = [{"layer_min": int(layer[i]), "min": float(v[i]), "first": float(v[0]), "last": float(v[-1])}]
    extra, extra_comps = _range_and_outliers(ctx, t)
    verdict, qual, reason = u_shape(t)
    if extra:
        reason += "; the histogram-range and outlier lines are context, not part of the verdict"
    return _record("C1", "\n".join(lines + extra), verdict, qual, reason, comps + extra_comps, ["teacher"])


def claim_c5(ctx: _Ctx) -> dict:
    return ctx.accuracy_claim("C5", ctx.named("late"), "late-aligned", -1)


def claim_c8(ctx: _Ctx) -> dict:
    return ctx.accuracy_claim("C8", ctx.named("early"), "early-aligned", None)


def claim_c9(ctx: _Ctx) -> dict:
    rec = ctx.accuracy_claim("C9", ctx.named("late", ("projector",)), "projector late-aligned", -1)
    if rec["verdict"] == NOT_TESTABLE:
        return rec
    # Context, not part of the verdict: the projector against the parameter-free late alignments.
    extra = []
    for p in ctx.named("late", ("projector",)):
        for s in ctx.named("late", ("spectral", "mse")):
            if len(ctx.final[p]) and len(ctx.final[s]):
                d = compare(ctx.final[p], ctx.final[s], ctx.tol.level, ctx.tol.noise_floor)
                extra.append(f"- context (not in the verdict): {p} minus {s}: "
                             f"{describe_diff(d, 'pts', 2, ctx.tol.level)}")
    if extra:
        rec["evidence"] += "\n" + "\n".join(extra)
    return rec


def claim_c10(ctx: _Ctx) -> dict:
    cid, tol = "C10", ctx.tol
    if (r := ctx.no_reference(cid)) is not None:
        return r
    targets = ctx.named("late")
    if not targets:
        return _not_testable(cid, "no late-aligned setting is configured", ["late-aligned"])
    ref_early, n_ref, e_ref = early_top1(ctx.curves, ctx.ref, tol.early_fraction)
    if len(ref_early) == 0:
        return _not_testable(cid, "the logit-KD reference has no epochs in curves.csv", [ctx.ref])
    present = [n for n in targets if len(ctx.final[n]) and len(early_top1(ctx.curves, n, tol.early_fraction)[0])]
    absent = [n for n in targets if n not in present]
    if not present:
        return _not_testable(cid, "no late-aligned setting has both curves and a final top-1", absent)
    lines = [f"- early window: epochs 1-{n_ref} of {e_ref} ({100 * tol.early_fraction:g}% of the epochs); "
             f"reference {ctx.ref}: early mean top-1 {fmt(ref_early.mean())}, final {fmt(ctx.final[ctx.ref].mean())}"]
    verdicts, comps = [], []
    for n in present:
        early, n_win, total = early_top1(ctx.curves, n, tol.early_fraction)
        de = compare(early, ref_early, tol.level, tol.noise_floor)
        df_ = compare(ctx.final[n], ctx.final[ctx.ref], tol.level, tol.noise_floor)
        ve, vf = directional(de, +1), directional(df_, -1)
        if ve[0] == HOLDS and vf[0] == HOLDS:
            v = (HOLDS, "")
        elif NOT_HOLD in (ve[0], vf[0]):
            v = (NOT_HOLD, "")
        else:
            v = (INCONCLUSIVE, "; ".join(sorted({q for _, q in (ve, vf) if q})))
        verdicts.append(v)
        comps.append({"setting": n, "reference": ctx.ref, "quantity": "early_mean_acc1", **_diff_dict(de),
                      "verdict": ve[0], "qualifier": ve[1]})
        comps.append({"setting": n, "reference": ctx.ref, "quantity": "final_acc1", **_diff_dict(df_),
                      "verdict": vf[0], "qualifier": vf[1]})
        lines.append(f"- {describe_setting(n, ctx.settings[n])}: early mean top-1 (epochs 1-{n_win} of {total}) "
                     f"{fmt(de.mean_a)} vs {fmt(de.mean_b)}, difference {describe_diff(de, 'pts', 2, tol.level)} "
                     f"-> speed-up {_verdict_text(*ve)}; final top-1 {fmt(df_.mean_a)} vs {fmt(df_.mean_b)}, "
                     f"difference {describe_diff(df_, 'pts', 2, tol.level)} -> lower final "
                     f"{_verdict_text(*vf)}")
    verdict, qual = combine(verdicts)
    reason = _reason(verdict, qual, "the claim needs the early difference above 0 and the final difference "
                     "below 0 (either on the other side refutes it)", tol)
    if absent:
        reason += f" (left out, no curves or final top-1: {', '.join(absent)})"
    return _record(cid, "\n".join(lines), verdict, qual, reason, comps, [ctx.ref, *present])


def claim_c11(ctx: _Ctx) -> dict:
    cid, tol = "C11", ctx.tol
    late, early = ctx.named("late"), ctx.named("early")
    missing = [w for w, lst in (("late-aligned", late), ("early-aligned", early)) if not lst]
    if missing:
        return _not_testable(cid, "needs late- and early-aligned settings of the same method", missing)
    loss = {n: final_feature_loss(ctx.accuracy, ctx.curves, n) for n in late + early}
    pairs = [(l_, e) for l_ in late for e in early
             if ctx.settings[l_]["method"] == ctx.settings[e]["method"] and len(loss[l_]) and len(loss[e])]
    if not pairs:
        methods = {ctx.settings[n]["method"] for n in late} & {ctx.settings[n]["method"] for n in early}
        why = ("no method has both a late- and an early-aligned setting with a final feature loss"
               if methods else "no method has both a late- and an early-aligned setting")
        return _not_testable(cid, why, [f"late/early pairs of one method (late: {', '.join(late)}; "
                                        f"early: {', '.join(early)})"])
    lines, verdicts, comps = [], [], []
    for l_, e in pairs:
        d = compare(loss[l_], loss[e], tol.level)
        ratio = d.mean_a / d.mean_b if d.mean_b > 0 else math.inf
        if d.has_interval:
            v = directional(d, +1)
        elif tol.loss_ratio_floor is not None:
            r = tol.loss_ratio_floor
            v = ((HOLDS, "") if ratio >= r else (NOT_HOLD, "") if ratio <= 1 / r
                 else (INCONCLUSIVE, "ratio within floor"))
        else:
            v = (INCONCLUSIVE, "one seed")
        verdicts.append(v)
        comps.append({"setting": l_, "reference": e, "quantity": "final_train_loss_feat", **_diff_dict(d),
                      "ratio": ratio, "verdict": v[0], "qualifier": v[1]})
        lines.append(f"- {describe_setting(l_, ctx.settings[l_])} vs {describe_setting(e, ctx.settings[e])}: final "
                     f"weighted feature loss {d.mean_a:.4g} vs {d.mean_b:.4g} (ratio {fmt(ratio)}x), difference "
                     f"{describe_diff(d, '', 4, tol.level)} -> {_verdict_text(*v)}"
                     + (f" (by the ratio floor {tol.loss_ratio_floor:g}x)" if d.method != "welch"
                        and tol.loss_ratio_floor is not None else ""))
    verdict, qual = combine(verdicts)
    rule = "the claim needs the late-minus-early loss interval above 0"
    by_ratio = [c for c in comps if c["method"] != "welch" and tol.loss_ratio_floor is not None]
    if by_ratio and len(by_ratio) == len(comps) and qual != "mixed":
        r = tol.loss_ratio_floor
        reason = (f"one seed: decided on the late/early loss ratio against the stated floor: >= {r:g}x holds, "
                  f"<= 1/{r:g} does not hold, in between inconclusive")
    elif qual == "one seed":
        reason = (f"one seed: {rule}, and a single run per setting gives no run-to-run spread (state "
                  "loss_ratio_floor to decide on the late/early ratio)")
    else:
        reason = _reason(verdict, qual, rule, tol)
        if by_ratio:
            reason += f"; one-seed pairs were decided on the late/early ratio against x{tol.loss_ratio_floor:g}"
    return _record(cid, "\n".join(lines), verdict, qual, reason + " (losses as logged, i.e. weighted)", comps,
                   sorted({n for p in pairs for n in p}))


def claim_c12(ctx: _Ctx) -> dict:
    cid, tol = "C12", ctx.tol
    if ctx.ref is None:
        return _not_testable(cid, "the logit-KD reference is not configured",
                             [tol.reference or "a logit-only setting (method: logit)"])
    ref_prof = entropy_profiles(ctx.layers, ctx.ref)
    if not ref_prof:
        return _not_testable(cid, "the logit-KD reference has no final student entropy rows in layers.csv", [ctx.ref])
    late = ctx.named("late")
    if not late:
        return _not_testable(cid, "no late-aligned setting is configured", ["late-aligned"])
    prof = {n: entropy_profiles(ctx.layers, n) for n in ctx.settings if ctx.kind[n] in ("early", "late", "early_late")}
    present = [n for n in late if prof.get(n)]
    if not present:
        return _not_testable(cid, "no late-aligned setting has final student entropy rows in layers.csv", late)

    def summary(name, profiles):
        s = pd.DataFrame([profile_stats(p) for p in profiles.values()])
        argmins = ", ".join(f"L{a}" for a in s["argmin"])
        return (f"{name}: min {fmt(s['min'].mean(), 3)} bits (at {argmins}), mean {fmt(s['mean'].mean(), 3)}, "
                f"U depth {fmt(s['u_depth'].mean(), 3)}, first {fmt(s['first'].mean(), 3)}, "
                f"last {fmt(s['last'].mean(), 3)} ({len(s)} seed{'s' if len(s) > 1 else ''})"), s

    ref_text, ref_s = summary(f"reference {ctx.ref}", ref_prof)
    lines = [f"- final entropy profiles, mean over seeds: {ref_text}"]
    verdicts, comps = [], []
    for n in present:
        text, s = summary(describe_setting(n, ctx.settings[n]), prof[n])
        d = compare(s["min"], ref_s["min"], tol.level, tol.entropy_noise_floor)
        dm = compare(s["mean"], ref_s["mean"], tol.level, tol.entropy_noise_floor)
        v = directional(d, -1)
        verdicts.append(v)
        comps.append({"setting": n, "reference": ctx.ref, "quantity": "final_min_entropy", **_diff_dict(d),
                      "verdict": v[0], "qualifier": v[1]})
        lines.append(f"- {text}; minimum minus reference {describe_diff(d, 'bits', 3, tol.level)} -> "
                     f"{_verdict_text(*v)}; mean entropy minus reference {fmt(dm.diff, 3, True)} bits")
    for n in ctx.settings:
        if ctx.kind[n] in ("early", "early_late") and prof.get(n):
            text, s = summary(describe_setting(n, ctx.settings[n]), prof[n])
            lines.append(f"- signature, not in the verdict: {text}; minimum minus reference "
                         f"{fmt(s['min'].mean() - ref_s['min'].mean(), 3, True)}, mean minus reference "
                         f"{fmt(s['mean'].mean() - ref_s['mean'].mean(), 3, True)} bits")
    # The early checkpoint: is the aligned student layer pinned low (paper.md 4.4)?
    ref_early = entropy_profiles(ctx.layers, ctx.ref, "earliest")
    for n in ctx.settings:
        if ctx.kind[n] not in ("early", "late", "early_late"):
            continue
        early = entropy_profiles(ctx.layers, n, "earliest")
        if not early or not ref_early:
            continue
        for blk in sorted({int(p[0]) for p in ctx.settings[n]["pairs"]}):
            lay = blk + 1
            a = [p.get(lay, np.nan) for p in early.values()]
            b = [p.get(lay, np.nan) for p in ref_early.values()]
            if np.isnan(a).all() or np.isnan(b).all():
                continue
            epoch = ctx.layers[(ctx.layers.setting == n) & (ctx.layers.role == "student")
                               & (ctx.layers.checkpoint != "final")].epoch.min()
            lines.append(f"- earliest checkpoint (epoch {int(epoch)}), aligned layer L{lay}: {n} "
                         f"{fmt(np.nanmean(a), 3)} vs {ctx.ref} {fmt(np.nanmean(b), 3)} bits "
                         f"({fmt(np.nanmean(a) - np.nanmean(b), 3, True)})")
    verdict, qual = combine(verdicts)
    rule = "the claim (a deeper U) needs the interval of the minimum-entropy difference below 0"
    reason = _reason(verdict, qual, rule, tol)
    if qual == "one seed":
        reason = reason.replace("state a noise floor", "state entropy_noise_floor")
    reason += ("; caveat: each model's entropy is binned on its own global value range (paper.md 2.3), so a level "
               "difference can come from outliers in any layer; argmin layer and U depth describe the shape")
    return _record(cid, "\n".join(lines), verdict, qual, reason, comps, [ctx.ref, *present])


CLAIM_FUNCTIONS = {"C1": claim_c1, "C5": claim_c5, "C8": claim_c8, "C9": claim_c9, "C10": claim_c10,
                   "C11": claim_c11, "C12": claim_c12}


def _with_columns(df: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """The table with any missing column added (empty), so that an absent table reads as 'no rows'."""
    df = pd.DataFrame() if df is None else df
    return df.reindex(columns=list(dict.fromkeys([*df.columns, *columns])))


def evaluate_claims(layers: pd.DataFrame, accuracy: pd.DataFrame, curves: pd.DataFrame, settings: dict,
                    student_depth: int, teacher_depth: int, **tolerances) -> list[dict]:
    """One record per claim (C1, C5, C8, C9, C10, C11, C12), in that order; see the module docstring."""
    names = {f.name for f in fields(Tolerances)}
    unknown = sorted(set(tolerances) - names)
    if unknown:
        raise TypeError(f"unknown tolerance(s) {unknown}; known: {sorted(names)}")
    tol = Tolerances(**tolerances)
    layers = _with_columns(layers, ["model", "role", "setting", "seed", "epoch", "layer", "metric", "value",
                                    "ci_low", "ci_high"])
    accuracy = _with_columns(accuracy, ["role", "setting", "seed", "final_acc1", "final_train_loss_feat"])
    curves = _with_columns(curves, ["role", "setting", "seed", "epoch", "test_acc1", "train_loss_feat"])
    ctx = _Ctx(layers, accuracy, curves, settings, student_depth, teacher_depth, tol)
    return [fn(ctx) for fn in CLAIM_FUNCTIONS.values()]


# ---------------------------------------------------------------- output


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(claims: list[dict], title: str, preamble: str | None = None) -> str:
    """A summary table (claim | verdict), then one section per claim: claim, evidence, paper, verdict, reason."""
    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    out = [f"# {title}", ""]
    if preamble:
        out += [preamble.rstrip(), ""]
    out += [f"Verdicts: {counts[HOLDS]} holds, {counts[NOT_HOLD]} does not hold, {counts[INCONCLUSIVE]} "
            f"inconclusive; {counts[NOT_TESTABLE]} not testable with this run's settings.", "",
            "| Claim | Statement | Verdict |", "|---|---|---|"]
    for c in claims:
        out.append(f"| [{c['claim_id']}](#{c['claim_id'].lower()}) | {_cell(c['claim'])} | "
                   f"**{_cell(_verdict_text(c['verdict'], c.get('qualifier', '')))}** |")
    for c in claims:
        out += ["", f"## {c['claim_id']}", "", f"**Claim.** {c['claim']}", "", "**Evidence (this run).**", ""]
        out.append(c["evidence"] if c["evidence"] else "- none: the claim cannot be tested with this run")
        out += ["", f"**Paper.** {c['paper']}", "",
                f"**Verdict.** {_verdict_text(c['verdict'], c.get('qualifier', ''))}", "",
                f"**Reason.** {c['reason']}"]
    return "\n".join(out) + "\n"


def settings_preamble(settings: dict, student_depth: int, teacher_depth: int, tol: Tolerances | None = None) -> str:
    tol = tol or Tolerances()
    ref = reference_setting(settings, tol.reference)
    rows = ["| Setting | Method | Pairs (student<->teacher, 0-based) | Alignment |", "|---|---|---|---|"]
    for n, s in settings.items():
        pairs = ", ".join(f"{int(a)}<->{int(b)}" for a, b in (s.get("pairs") or [])) or "-"
        kind = classify_setting(s, student_depth).replace("_", "+")
        label = f"{_cell(n)}{' (reference)' if n == ref else ''}"
        rows.append(f"| {label} | {s.get('method', 'none')} | {pairs} | {kind} |")
    floor = "none (one seed is inconclusive)" if tol.noise_floor is None else f"{tol.noise_floor:g} pts"
    return (f"Student depth {student_depth}, teacher depth {teacher_depth}. Intervals: Welch t, "
            f"{100 * tol.level:g}% two-sided, over seeds; neutrality tolerance +-{tol.neutral_tolerance:g} pts; "
            f"one-seed noise floor: {floor}. Rules: `python -c 'import distdyn.claims as c; help(c)'`.\n\n"
            + "\n".join(rows))


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return None if math.isnan(x) else ("inf" if math.isinf(x) else x)
    return obj


def _read_csv(path):
    return read_table(path) if path else None


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.claims", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", required=True)
    p.add_argument("--accuracy", required=True)
    p.add_argument("--curves", required=True)
    p.add_argument("--settings-json", required=True,
                   help="JSON {name: {method, pairs}} (a string, or a path to a JSON file)")
    p.add_argument("--student-depth", type=int, required=True)
    p.add_argument("--teacher-depth", type=int, required=True)
    p.add_argument("--out", required=True, help="Markdown report")
    p.add_argument("--json", help="also write the records as JSON here")
    p.add_argument("--title", default="Claims of the paper, tested on this run")
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--neutral-tolerance", type=float, default=1.0)
    p.add_argument("--noise-floor", type=float, default=None)
    p.add_argument("--entropy-noise-floor", type=float, default=None)
    p.add_argument("--loss-ratio-floor", type=float, default=None)
    p.add_argument("--early-fraction", type=float, default=0.25)
    p.add_argument("--reference", default=None)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    text = a.settings_json.strip()
    settings = read_spec(text)
    tol = dict(level=a.level, neutral_tolerance=a.neutral_tolerance, noise_floor=a.noise_floor,
               entropy_noise_floor=a.entropy_noise_floor, loss_ratio_floor=a.loss_ratio_floor,
               early_fraction=a.early_fraction, reference=a.reference)
    claims = evaluate_claims(_read_csv(a.layers), _read_csv(a.accuracy), _read_csv(a.curves), settings,
                             a.student_depth, a.teacher_depth, **tol)
    preamble = settings_preamble(settings, a.student_depth, a.teacher_depth, Tolerances(**tol))
    write_text(render_markdown(claims, a.title, preamble), a.out)
    if a.json:
        write_text(json.dumps(_json_safe(claims), indent=2) + "\n", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
