"""One verdict per claim, as data (`Verdict`); distdyn.claims.render words it."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from . import evidence as ev
from .settings import FEATURE_METHODS, Tolerances, classify_setting, describe_setting, reference_setting
from .stats import (HOLDS, INCONCLUSIVE, NOT_HOLD, NOT_TESTABLE, combine, compare, describe_diff, diff_dict,
                    directional, fmt, neutral, plural, verdict_text)


@dataclass
class Reason:
    """Why a verdict, as data: the rule the claim's interval(s) had to meet, worded by the renderer for the
    verdict and qualifier, or a wording of its own (`text`); then the missing settings and the notes."""

    rule: str = ""
    text: str = ""
    floor: str = "a noise floor"  # what a one-seed reason asks the user to state (the option deciding one seed)
    missing: list[str] = field(default_factory=list)  # not testable: the settings it needs
    notes: list[tuple[str, str]] = field(default_factory=list)  # ("aside" | "clause", text), in order


@dataclass
class Verdict:
    """A claim's verdict with the evidence lines (numbers as written) and comparisons (numbers as data)."""

    claim_id: str
    verdict: str
    qualifier: str
    reason: Reason
    evidence: list[str] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    settings_used: list[str] = field(default_factory=list)
    withdrawn: tuple[str, str] | None = None  # (verdict, qualifier) given up: the evidence held no number

    def __post_init__(self):
        # Never a verdict without numbers.
        if self.verdict != NOT_TESTABLE and not any(re.search(r"\d", line) for line in self.evidence):
            self.withdrawn = (self.verdict, self.qualifier)
            self.verdict, self.qualifier = NOT_TESTABLE, ""


def not_testable(cid: str, why: str, missing: list[str] | None = None) -> Verdict:
    return Verdict(cid, NOT_TESTABLE, "", Reason(text=why, missing=list(missing or [])))


class _Ctx:
    def __init__(self, layers, accuracy, curves, settings, student_depth, teacher_depth, tol: Tolerances):
        self.layers, self.accuracy, self.curves = layers, accuracy, curves
        self.settings = {str(k): dict(v) for k, v in settings.items()}
        self.student_depth, self.teacher_depth, self.tol = int(student_depth), int(teacher_depth), tol
        self.kind = {n: classify_setting(s, self.student_depth) for n, s in self.settings.items()}
        self.ref = reference_setting(self.settings, tol.reference)
        self.final = {n: ev.per_seed(accuracy, n, "final_acc1") for n in self.settings}

    def named(self, kind: str, methods=FEATURE_METHODS) -> list[str]:
        return [n for n, k in self.kind.items() if k == kind and self.settings[n]["method"] in methods]

    def no_reference(self, cid: str) -> Verdict | None:
        if self.ref is None:
            return not_testable(cid, "the logit-KD reference is not configured", [self.wanted_reference()])
        if len(self.final[self.ref]) == 0:
            return not_testable(cid, "the logit-KD reference has no final top-1 in accuracy.csv", [self.ref])
        return None

    def wanted_reference(self) -> str:
        return self.tol.reference or "a logit-only setting (method: logit)"

    def accuracy_claim(self, cid: str, targets: list[str], wanted: str, sign: int | None) -> Verdict:
        """Final top-1 of each target minus the reference: directional (sign) or neutral (sign None)."""
        if (r := self.no_reference(cid)) is not None:
            return r
        if not targets:
            return not_testable(cid, f"no {wanted} setting is configured", [wanted])
        absent = [n for n in targets if len(self.final[n]) == 0]
        present = [n for n in targets if len(self.final[n])]
        if not present:
            return not_testable(cid, f"no {wanted} setting has a final top-1 in accuracy.csv", absent)
        tol, verdicts, comps = self.tol, [], []
        ref = self.final[self.ref]
        lines = [f"- reference {describe_setting(self.ref, self.settings[self.ref])}: final top-1 "
                 f"{fmt(ref.mean())} (mean of {len(ref)} {plural(len(ref))}: {', '.join(fmt(x) for x in ref)})"]
        for n in present:
            d = compare(self.final[n], ref, tol.level, tol.noise_floor)
            v = directional(d, sign) if sign is not None else neutral(d, tol.neutral_tolerance)
            verdicts.append(v)
            comps.append({"setting": n, "reference": self.ref, "quantity": "final_acc1", **diff_dict(d),
                          "verdict": v[0], "qualifier": v[1]})
            lines.append(f"- {describe_setting(n, self.settings[n])}: final top-1 {fmt(d.mean_a)} vs "
                         f"{fmt(d.mean_b)}, difference {describe_diff(d, 'pts', 2, tol.level)} -> "
                         f"{verdict_text(*v)}")
        verdict, qual = combine(verdicts)
        if sign is None:
            rule = (f"neutral means the {100 * tol.level:g}% interval of the difference lies within "
                    f"+-{tol.neutral_tolerance:g} pts")
        else:
            rule = f"the claim needs the interval of the difference to lie {'above' if sign > 0 else 'below'} 0"
        notes = [("aside", f"configured but without results, left out: {', '.join(absent)}")] if absent else []
        return Verdict(cid, verdict, qual, Reason(rule, notes=notes), lines, comps, [self.ref, *present])


# ---------------------------------------------------------------- C1


def u_shape(t: pd.DataFrame, phase: dict | None = None) -> tuple[str, str, str]:
    """C1's rule on one teacher profile (>= 3 layers), from its `phases` row: (verdict, qualifier, reason)."""
    phase = phase or ev.teacher_phase(t)
    lay = phase["min_layer"]
    if not phase["interior"]:
        end = "first" if lay == t.layer.iloc[0] else "last"
        return NOT_HOLD, "", f"the minimum is at the {end} layer (L{lay}), so there is no interior dip"
    if not ev.has_ci(t):
        return (INCONCLUSIVE, "no intervals", f"the minimum is interior (L{lay}) but no bootstrap intervals were "
                "computed (metrics.bootstrap = 0), so it cannot be told from noise")
    if phase["u_shaped"]:
        return (HOLDS, "", f"the minimum is interior (L{lay}) and its interval lies below the intervals of both "
                "the first and the last layer")
    # phases says the minimum's interval meets an end's; the reason names which.
    top = t.ci_high[t.layer == lay].iloc[0]
    ends = [e for e, j in (("first", 0), ("last", -1)) if not top < t.ci_low.iloc[j]]
    return (INCONCLUSIVE, "overlapping intervals", f"overlapping intervals: the minimum is interior (L{lay}) but "
            f"its interval overlaps the {' and '.join(ends)} layer's")


ENTROPY_RANGES = {"entropy_global": "the file-wide histogram range, as the authors' code",
                  "entropy_per_layer": "each layer's own histogram range"}


def _range_and_outliers(ctx: _Ctx, t: pd.DataFrame, phase: dict) -> tuple[list[str], list[dict]]:
    """Evidence beside C1's verdict: the same rule on both histogram ranges, and the outlier channels
    (paper.md 2.3, quirk 2) at the first, minimum and last layers and where they are largest."""
    lines, comps, verdicts = [], [], {}
    for metric, label in ENTROPY_RANGES.items():
        r = ev.teacher_entropy(ctx.layers, metric)
        if len(r) < 3:
            continue
        ph = ev.teacher_phase(r)
        v = r["value"].to_numpy(float)
        same = len(r) == len(t) and np.allclose(v, t["value"].to_numpy(float), rtol=0, atol=0)
        verdict, qual, _ = u_shape(r, ph)
        verdicts[metric] = verdict
        lines.append(f"- {metric} ({label}{'; the entropy above' if same else ''}): first "
                     f"{fmt(ph['h_first'], 3)}, minimum L{ph['min_layer']} {fmt(ph['h_min'], 3)}, last "
                     f"{fmt(ph['h_last'], 3)} bits; U-shape by the same rule: {verdict_text(verdict, qual)}")
        comps.append({"quantity": metric, "layer_min": ph["min_layer"], "min": float(ph["h_min"]),
                      "first": float(ph["h_first"]), "last": float(ph["h_last"]), "verdict": verdict,
                      "qualifier": qual})
    ratio = ev.teacher_entropy(ctx.layers, "outlier_ratio").set_index("layer")["value"]
    count = ev.teacher_entropy(ctx.layers, "outlier_channels").set_index("layer")["value"]
    if ratio.notna().any():
        layer = t["layer"].to_numpy()
        marks = {}
        for lay, what in ((layer[0], "first"), (phase["min_layer"], "minimum"), (layer[-1], "last"),
                          (ratio.idxmax(), "largest")):
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


def claim_c1(ctx: _Ctx) -> Verdict:
    t = ev.teacher_entropy(ctx.layers)
    if len(t) == 0:
        return not_testable("C1", "no teacher entropy rows in layers.csv", ["teacher"])
    if len(t) < 3:
        return not_testable("C1", f"the teacher has {len(t)} layer(s); a U-shape needs at least 3")
    phase = ev.teacher_phase(t)
    v, layer = t["value"].to_numpy(float), t["layer"].to_numpy()
    i = int(np.flatnonzero(layer == phase["min_layer"])[0])
    has_ci = ev.has_ci(t)

    def show(j):
        ci = f" [{fmt(t.ci_low.iloc[j], 3)}, {fmt(t.ci_high.iloc[j], 3)}]" if has_ci else ""
        return f"L{layer[j]} {fmt(v[j], 3)}{ci}"

    profile = ", ".join(f"L{layer[j]} {fmt(v[j], 3)}" for j in range(len(v)))
    steps = np.diff(v)
    shape = ("monotone increasing" if (steps >= 0).all() else "monotone decreasing" if (steps <= 0).all()
             else "not monotone")
    depth = min(phase["h_first"], phase["h_last"]) - phase["h_min"]
    lines = [f"- teacher final entropy profile (bits): {profile}",
             f"- first {show(0)}; minimum {show(i)}; last {show(len(v) - 1)}"
             + (" (bootstrap intervals over probe images)" if has_ci else " (no bootstrap intervals)"),
             f"- U depth (lower end minus minimum): {fmt(depth, 3)} bits; profile {shape}"]
    comps = [{"layer_min": phase["min_layer"], "min": float(phase["h_min"]), "first": float(phase["h_first"]),
              "last": float(phase["h_last"])}]
    extra, extra_comps = _range_and_outliers(ctx, t, phase)
    verdict, qual, why = u_shape(t, phase)
    notes = [("clause", "the histogram-range and outlier lines are context, not part of the verdict")] if extra else []
    return Verdict("C1", verdict, qual, Reason(text=why, notes=notes), lines + extra, comps + extra_comps,
                   ["teacher"])


# ---------------------------------------------------------------- C5, C8, C9, C10: accuracy


def claim_c5(ctx: _Ctx) -> Verdict:
    return ctx.accuracy_claim("C5", ctx.named("late"), "late-aligned", -1)


def claim_c8(ctx: _Ctx) -> Verdict:
    return ctx.accuracy_claim("C8", ctx.named("early"), "early-aligned", None)


def claim_c9(ctx: _Ctx) -> Verdict:
    projectors = ctx.named("late", ("projector",))
    rec = ctx.accuracy_claim("C9", projectors, "projector late-aligned", -1)
    if rec.verdict == NOT_TESTABLE:
        return rec
    # Context, not part of the verdict: the projector against the parameter-free late alignments.
    for p in projectors:
        for s in ctx.named("late", ("spectral", "mse")):
            if len(ctx.final[p]) and len(ctx.final[s]):
                d = compare(ctx.final[p], ctx.final[s], ctx.tol.level, ctx.tol.noise_floor)
                rec.evidence.append(f"- context (not in the verdict): {p} minus {s}: "
                                    f"{describe_diff(d, 'pts', 2, ctx.tol.level)}")
    return rec


def claim_c10(ctx: _Ctx) -> Verdict:
    cid, tol = "C10", ctx.tol
    if (r := ctx.no_reference(cid)) is not None:
        return r
    targets = ctx.named("late")
    if not targets:
        return not_testable(cid, "no late-aligned setting is configured", ["late-aligned"])
    ref_early, n_ref, e_ref = ev.early_top1(ctx.curves, ctx.ref, tol.early_fraction)
    if len(ref_early) == 0:
        return not_testable(cid, "the logit-KD reference has no epochs in curves.csv", [ctx.ref])
    present = [n for n in targets if len(ctx.final[n]) and len(ev.early_top1(ctx.curves, n, tol.early_fraction)[0])]
    absent = [n for n in targets if n not in present]
    if not present:
        return not_testable(cid, "no late-aligned setting has both curves and a final top-1", absent)
    lines = [f"- early window: epochs 1-{n_ref} of {e_ref} ({100 * tol.early_fraction:g}% of the epochs); "
             f"reference {ctx.ref}: early mean top-1 {fmt(ref_early.mean())}, final {fmt(ctx.final[ctx.ref].mean())}"]
    verdicts, comps = [], []
    for n in present:
        early, n_win, total = ev.early_top1(ctx.curves, n, tol.early_fraction)
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
        comps.append({"setting": n, "reference": ctx.ref, "quantity": "early_mean_acc1", **diff_dict(de),
                      "verdict": ve[0], "qualifier": ve[1]})
        comps.append({"setting": n, "reference": ctx.ref, "quantity": "final_acc1", **diff_dict(df_),
                      "verdict": vf[0], "qualifier": vf[1]})
        lines.append(f"- {describe_setting(n, ctx.settings[n])}: early mean top-1 (epochs 1-{n_win} of {total}) "
                     f"{fmt(de.mean_a)} vs {fmt(de.mean_b)}, difference {describe_diff(de, 'pts', 2, tol.level)} "
                     f"-> speed-up {verdict_text(*ve)}; final top-1 {fmt(df_.mean_a)} vs {fmt(df_.mean_b)}, "
                     f"difference {describe_diff(df_, 'pts', 2, tol.level)} -> lower final "
                     f"{verdict_text(*vf)}")
    verdict, qual = combine(verdicts)
    reason = Reason("the claim needs the early difference above 0 and the final difference below 0 (either on the "
                    "other side refutes it)")
    if absent:
        reason.notes.append(("aside", f"left out, no curves or final top-1: {', '.join(absent)}"))
    return Verdict(cid, verdict, qual, reason, lines, comps, [ctx.ref, *present])


# ---------------------------------------------------------------- C11: feature loss


def claim_c11(ctx: _Ctx) -> Verdict:
    cid, tol = "C11", ctx.tol
    late, early = ctx.named("late"), ctx.named("early")
    missing = [w for w, lst in (("late-aligned", late), ("early-aligned", early)) if not lst]
    if missing:
        return not_testable(cid, "needs late- and early-aligned settings of the same method", missing)
    loss = {n: ev.final_feature_loss(ctx.accuracy, ctx.curves, n) for n in late + early}
    pairs = [(l_, e) for l_ in late for e in early
             if ctx.settings[l_]["method"] == ctx.settings[e]["method"] and len(loss[l_]) and len(loss[e])]
    if not pairs:
        methods = {ctx.settings[n]["method"] for n in late} & {ctx.settings[n]["method"] for n in early}
        why = ("no method has both a late- and an early-aligned setting with a final feature loss"
               if methods else "no method has both a late- and an early-aligned setting")
        return not_testable(cid, why, [f"late/early pairs of one method (late: {', '.join(late)}; "
                                       f"early: {', '.join(early)})"])
    r = tol.loss_ratio_floor
    lines, verdicts, comps = [], [], []
    for l_, e in pairs:
        d = compare(loss[l_], loss[e], tol.level)
        ratio = d.mean_a / d.mean_b if d.mean_b > 0 else math.inf
        if d.has_interval:
            v = directional(d, +1)
        elif r is not None:
            v = ((HOLDS, "") if ratio >= r else (NOT_HOLD, "") if ratio <= 1 / r
                 else (INCONCLUSIVE, "ratio within floor"))
        else:
            v = (INCONCLUSIVE, "one seed")
        verdicts.append(v)
        comps.append({"setting": l_, "reference": e, "quantity": "final_train_loss_feat", **diff_dict(d),
                      "ratio": ratio, "verdict": v[0], "qualifier": v[1]})
        lines.append(f"- {describe_setting(l_, ctx.settings[l_])} vs {describe_setting(e, ctx.settings[e])}: final "
                     f"weighted feature loss {d.mean_a:.4g} vs {d.mean_b:.4g} (ratio {fmt(ratio)}x), difference "
                     f"{describe_diff(d, '', 4, tol.level)} -> {verdict_text(*v)}"
                     + (f" (by the ratio floor {r:g}x)" if d.method != "welch" and r is not None else ""))
    verdict, qual = combine(verdicts)
    rule = "the claim needs the late-minus-early loss interval above 0"
    by_ratio = [c for c in comps if c["method"] != "welch" and r is not None]
    if by_ratio and len(by_ratio) == len(comps) and qual != "mixed":
        reason = Reason(text=f"one seed: decided on the late/early loss ratio against the stated floor: >= {r:g}x "
                             f"holds, <= 1/{r:g} does not hold, in between inconclusive")
    elif qual == "one seed":
        reason = Reason(text=f"one seed: {rule}, and a single run per setting gives no run-to-run spread (state "
                             "loss_ratio_floor to decide on the late/early ratio)")
    else:
        reason = Reason(rule)
        if by_ratio:
            reason.notes.append(("clause", f"one-seed pairs were decided on the late/early ratio against x{r:g}"))
    reason.notes.append(("aside", "losses as logged, i.e. weighted"))
    return Verdict(cid, verdict, qual, reason, lines, comps, sorted({n for p in pairs for n in p}))


# ---------------------------------------------------------------- C12: the student's entropy profile


def _profile_summary(name: str, profiles: dict) -> tuple[str, pd.DataFrame]:
    s = pd.DataFrame([ev.profile_stats(p) for p in profiles.values()])
    argmins = ", ".join(f"L{a}" for a in s["argmin"])
    return (f"{name}: min {fmt(s['min'].mean(), 3)} bits (at {argmins}), mean {fmt(s['mean'].mean(), 3)}, "
            f"U depth {fmt(s['u_depth'].mean(), 3)}, first {fmt(s['first'].mean(), 3)}, "
            f"last {fmt(s['last'].mean(), 3)} ({len(s)} {plural(len(s))})"), s


def claim_c12(ctx: _Ctx) -> Verdict:
    cid, tol = "C12", ctx.tol
    if ctx.ref is None:
        return not_testable(cid, "the logit-KD reference is not configured", [ctx.wanted_reference()])
    ref_prof = ev.entropy_profiles(ctx.layers, ctx.ref)
    if not ref_prof:
        return not_testable(cid, "the logit-KD reference has no final student entropy rows in layers.csv", [ctx.ref])
    late = ctx.named("late")
    if not late:
        return not_testable(cid, "no late-aligned setting is configured", ["late-aligned"])
    aligned = [n for n in ctx.settings if ctx.kind[n] in ("early", "late", "early_late")]
    prof = {n: ev.entropy_profiles(ctx.layers, n) for n in aligned}
    present = [n for n in late if prof.get(n)]
    if not present:
        return not_testable(cid, "no late-aligned setting has final student entropy rows in layers.csv", late)
    ref_text, ref_s = _profile_summary(f"reference {ctx.ref}", ref_prof)
    lines = [f"- final entropy profiles, mean over seeds: {ref_text}"]
    verdicts, comps = [], []
    for n in present:
        text, s = _profile_summary(describe_setting(n, ctx.settings[n]), prof[n])
        d = compare(s["min"], ref_s["min"], tol.level, tol.entropy_noise_floor)
        dm = compare(s["mean"], ref_s["mean"], tol.level, tol.entropy_noise_floor)
        v = directional(d, -1)
        verdicts.append(v)
        comps.append({"setting": n, "reference": ctx.ref, "quantity": "final_min_entropy", **diff_dict(d),
                      "verdict": v[0], "qualifier": v[1]})
        lines.append(f"- {text}; minimum minus reference {describe_diff(d, 'bits', 3, tol.level)} -> "
                     f"{verdict_text(*v)}; mean entropy minus reference {fmt(dm.diff, 3, True)} bits")
    for n in aligned:
        if ctx.kind[n] != "late" and prof.get(n):
            text, s = _profile_summary(describe_setting(n, ctx.settings[n]), prof[n])
            lines.append(f"- signature, not in the verdict: {text}; minimum minus reference "
                         f"{fmt(s['min'].mean() - ref_s['min'].mean(), 3, True)}, mean minus reference "
                         f"{fmt(s['mean'].mean() - ref_s['mean'].mean(), 3, True)} bits")
    # The early checkpoint: is the aligned student layer pinned low (paper.md 4.4)?
    ref_early = ev.entropy_profiles(ctx.layers, ctx.ref, "earliest")
    for n in aligned:
        early = ev.entropy_profiles(ctx.layers, n, "earliest")
        if not early or not ref_early:
            continue
        for blk in sorted({int(p[0]) for p in ctx.settings[n]["pairs"]}):
            lay = blk + 1
            a = [p.get(lay, np.nan) for p in early.values()]
            b = [p.get(lay, np.nan) for p in ref_early.values()]
            if np.isnan(a).all() or np.isnan(b).all():
                continue
            lines.append(f"- earliest checkpoint (epoch {ev.earliest_epoch(ctx.layers, n)}), aligned layer L{lay}: "
                         f"{n} {fmt(np.nanmean(a), 3)} vs {ctx.ref} {fmt(np.nanmean(b), 3)} bits "
                         f"({fmt(np.nanmean(a) - np.nanmean(b), 3, True)})")
    verdict, qual = combine(verdicts)
    reason = Reason("the claim (a deeper U) needs the interval of the minimum-entropy difference below 0",
                    floor="entropy_noise_floor",
                    notes=[("clause", "caveat: each model's entropy is binned on its own global value range "
                            "(paper.md 2.3), so a level difference can come from outliers in any layer; argmin "
                            "layer and U depth describe the shape")])
    return Verdict(cid, verdict, qual, reason, lines, comps, [ctx.ref, *present])


CLAIM_FUNCTIONS = {"C1": claim_c1, "C5": claim_c5, "C8": claim_c8, "C9": claim_c9, "C10": claim_c10,
                   "C11": claim_c11, "C12": claim_c12}


def evaluate(layers: pd.DataFrame, accuracy: pd.DataFrame, curves: pd.DataFrame, settings: dict,
             student_depth: int, teacher_depth: int, **tolerances) -> list[Verdict]:
    """One verdict per claim (C1, C5, C8, C9, C10, C11, C12), in that order; see the package docstring."""
    names = {f.name for f in fields(Tolerances)}
    unknown = sorted(set(tolerances) - names)
    if unknown:
        raise TypeError(f"unknown tolerance(s) {unknown}; known: {sorted(names)}")
    tol = Tolerances(**tolerances)
    layers = ev.with_columns(layers, ev.LAYER_NEEDS)
    accuracy = ev.with_columns(accuracy, ev.ACCURACY_NEEDS)
    curves = ev.with_columns(curves, ev.CURVE_NEEDS)
    ctx = _Ctx(layers, accuracy, curves, settings, student_depth, teacher_depth, tol)
    return [fn(ctx) for fn in CLAIM_FUNCTIONS.values()]
