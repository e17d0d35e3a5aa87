"""Methods beyond the paper (docs/methods.md), e.g. ViTKD: the last section of claims.md.

The paper's claims are judged on its own methods only. A setting with any other method is put beside
logit KD and late mimicry (the late-aligned spectral setting, spectral_last) as a test of the paper's
prescription, that a method which does not make the student's late features copy the teacher's should
do better than late mimicry: its final top-1 difference with the claims' intervals and rules (a
direction where the interval excludes 0, else inconclusive), its final entropy profile and its linear
CKA with the teacher beside theirs. No verdict on a claim of the paper.
"""
from __future__ import annotations

import pandas as pd

from ..methods import PAPER_METHODS
from . import evidence as ev
from .settings import Tolerances, classify_setting, describe_setting, reference_setting
from .stats import HOLDS, NOT_HOLD, compare, describe_diff, directional, fmt, plural


def late_mimicry(settings: dict, student_depth: int) -> list[str]:
    """The late-aligned spectral settings (spectral_last), else every late-aligned setting of the paper's methods."""
    late = [n for n, s in settings.items() if s.get("method") in PAPER_METHODS
            and classify_setting(s, student_depth) == "late"]
    return [n for n in late if settings[n]["method"] == "spectral"] or late


def _direction(d) -> str:
    verdict, qualifier = directional(d, +1)
    return {HOLDS: "higher", NOT_HOLD: "lower"}.get(verdict, f"inconclusive ({qualifier})")


def _entropy(layers: pd.DataFrame, name: str) -> str | None:
    profiles = ev.entropy_profiles(layers, name)
    if not profiles:
        return None
    s = pd.DataFrame([ev.profile_stats(p) for p in profiles.values()])
    return (f"min {fmt(s['min'].mean(), 3)} bits at {', '.join(f'L{a}' for a in s['argmin'])}, mean "
            f"{fmt(s['mean'].mean(), 3)}, U depth {fmt(s['u_depth'].mean(), 3)}, first {fmt(s['first'].mean(), 3)}, "
            f"last {fmt(s['last'].mean(), 3)}")


def _cka(cka: pd.DataFrame | None, name: str, student_depth: int, teacher_depth: int) -> str | None:
    """Final checkpoint, mean over seeds: CKA of the first and of the last student block with the teacher's."""
    if cka is None or not {"setting", "checkpoint", "student_layer", "teacher_layer", "cka"} <= set(cka.columns):
        return None
    rows = cka[(cka["setting"] == name) & (cka["checkpoint"] == "final")]
    if len(rows) == 0:
        return None

    def at(s: int, t: int) -> float:
        return float(rows[(rows["student_layer"] == s) & (rows["teacher_layer"] == t)]["cka"].mean())

    return (f"CKA first<->first {fmt(at(1, 1), 3)}, last<->last {fmt(at(student_depth, teacher_depth), 3)}, "
            f"last student block's best teacher block "
            f"L{int(rows[rows['student_layer'] == student_depth].groupby('teacher_layer')['cka'].mean().idxmax())}")


def beyond_section(layers, accuracy, settings: dict, student_depth: int, teacher_depth: int,
                   tol: Tolerances | None = None, cka: pd.DataFrame | None = None) -> str | None:
    """The markdown section on the settings whose method is not the paper's; None when there are none."""
    tol = tol or Tolerances()
    extra = [n for n, s in settings.items() if s.get("method") not in PAPER_METHODS]
    if not extra:
        return None
    layers = ev.with_columns(layers, ev.LAYER_NEEDS)
    ref = reference_setting(settings, tol.reference)
    late = late_mimicry(settings, student_depth)
    baselines = [n for n in [ref, *late] if n is not None]
    final = {n: ev.per_seed(accuracy, n, "final_acc1") for n in [*extra, *baselines]}
    out = ["## Methods beyond the paper", "",
           "Not claims of the paper (its claims above are judged on its own methods only): each setting with "
           "another method beside logit KD and late mimicry, as a test of the paper's prescription that a method "
           "which does not make the student's late features copy the teacher's does better than late mimicry. "
           f"Differences of final top-1 with the claims' {100 * tol.level:g}% t intervals over seeds (paired when "
           "the seeds match, else Welch); a direction only where the interval excludes 0."]
    for n in extra:
        out += ["", f"### {describe_setting(n, settings[n])}", ""]
        mine = final[n]
        if len(mine) == 0:
            out.append("- no final top-1 in accuracy.csv")
            continue
        out.append(f"- final top-1 {fmt(mine.mean())} (mean of {len(mine)} {plural(len(mine))}: "
                   f"{', '.join(fmt(x) for x in mine)})")
        if not baselines:
            out.append("- nothing to compare with: configure a logit setting and a late-aligned spectral one")
        for b in baselines:
            label = "logit KD" if b == ref else "late mimicry"
            if len(final[b]) == 0:
                out.append(f"- vs {label} {b}: no final top-1 in accuracy.csv")
                continue
            d = compare(mine, final[b], tol.level, tol.noise_floor)
            out.append(f"- vs {label} {describe_setting(b, settings[b])} (top-1 {fmt(d.mean_b)}): "
                       f"{describe_diff(d, 'pts', 2, tol.level)} -> {_direction(d)}")
        for who in [n, *baselines]:
            parts = [p for p in (_entropy(layers, who), _cka(cka, who, student_depth, teacher_depth)) if p]
            if parts:
                out.append(f"- {who}: final entropy profile {'; '.join(parts)}")
    return "\n".join(out) + "\n"
