"""One verdict per claim, as data (`Verdict`): each claim's test is a row of claims.yaml (statements.Test),
evaluated by `evaluate_test` (C1's shape rule by `claim_c1`); distdyn.claims.render words it."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from . import evidence as ev
from .settings import FEATURE_METHODS, Tolerances, classify_setting, describe_setting, reference_setting
from .statements import TESTS, Part, Test
from .stats import (HOLDS, INCONCLUSIVE, MAX_SEEDS, NOT_HOLD, NOT_TESTABLE, POWER, Diff, McNemar, all_of, combine,
                    compare, describe_diff, diff_dict, directional, fmt, mcnemar, neutral, plural, seeds_needed,
                    verdict_text)


@dataclass
class Reason:
    """Why a verdict, as data: the rule the claim's interval(s) had to meet, worded by the renderer for the
    verdict and qualifier, or a wording of its own (`text`); then the missing settings and the notes."""

    rule: str = ""
    text: str = ""
    floor: str = "noise_floor"  # the option that decides one seed, which a one-seed reason asks the user to state
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
    def __init__(self, layers, accuracy, curves, settings, student_depth, teacher_depth, tol: Tolerances,
                 correct: dict | None = None):
        self.layers, self.accuracy, self.curves = layers, accuracy, curves
        self.tables = {"layers": layers, "accuracy": accuracy, "curves": curves}
        self.settings = {str(k): dict(v) for k, v in settings.items()}
        self.student_depth, self.teacher_depth, self.tol = int(student_depth), int(teacher_depth), tol
        self.kind = {n: classify_setting(s, self.student_depth) for n, s in self.settings.items()}
        self.ref = reference_setting(self.settings, tol.reference)
        self.correct = correct or {}  # (setting, seed) -> per-image correctness of the final model
        self._values = {}

    def values(self, quantity: str, setting: str) -> pd.Series:
        """The quantity per seed for a setting (evidence.QUANTITIES), read once."""
        key = (quantity, setting)
        if key not in self._values:
            self._values[key] = ev.QUANTITIES[quantity].read(self.tables, setting, self.tol.early_fraction)
        return self._values[key]

    def named(self, kind: str, methods=FEATURE_METHODS) -> list[str]:
        return [n for n, k in self.kind.items() if k == kind and self.settings[n]["method"] in methods]

    def wanted_reference(self) -> str:
        return self.tol.reference or "a logit-only setting (method: logit)"

    def label(self, quantity: str, setting: str) -> str:
        """The quantity's label; the early window's epochs with it."""
        q = ev.QUANTITIES[quantity]
        if quantity == "early_mean_acc1":
            _, n, total = ev.early_top1(self.curves, setting, self.tol.early_fraction)
            return f"{q.label} (epochs 1-{n} of {total})"
        return q.label


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


# ---------------------------------------------------------------- every other claim: one test, as data


@dataclass
class Comparison:
    """One part of a claim on one setting: setting minus `against` in one quantity, with its verdict."""

    setting: str
    against: str
    part: Part
    diff: Diff
    verdict: tuple[str, str]
    paper_effect: float | None = None  # the paper's difference for this setting's method
    seeds_needed: int | None = None  # seeds (per setting) to decide the part at the paper's effect, 80 % power
    seeds_note: str | None = None  # why there is no such number
    mcnemar: McNemar | None = None  # one seed each: the two final models on the same validation images
    ratio: float | None = None  # floor rule ratio: mean of the setting over mean of `against`
    by_ratio: float | None = None  # the ratio floor that decided this one-seed part

    def record(self) -> dict:
        out = {"setting": self.setting, "reference": self.against, "quantity": self.part.quantity,
               **diff_dict(self.diff), "verdict": self.verdict[0], "qualifier": self.verdict[1]}
        if self.part.paper_effect:
            out.update(paper_effect=self.paper_effect, seeds_needed=self.seeds_needed, power=POWER)
            if self.seeds_note:
                out["seeds_note"] = self.seeds_note
        if self.mcnemar is not None:
            out["mcnemar"] = vars(self.mcnemar)
        if self.ratio is not None:
            out["ratio"] = self.ratio
        return out


def _part_verdict(test: Test, part: Part, d: Diff, tol: Tolerances, ratio: float | None) -> tuple[str, str]:
    if not d.has_interval and test.floor_rule == "ratio" and getattr(tol, test.floor) is not None:
        r = getattr(tol, test.floor)
        return (HOLDS, "") if ratio >= r else (NOT_HOLD, "") if ratio <= 1 / r else (INCONCLUSIVE, "ratio within floor")
    return neutral(d, tol.neutral_tolerance) if part.sign is None else directional(d, part.sign)


def _compare(ctx: _Ctx, test: Test, part: Part, setting: str, against: str) -> Comparison:
    a, b = ctx.values(part.quantity, setting), ctx.values(part.quantity, against)
    floor = getattr(ctx.tol, test.floor) if test.floor and test.floor_rule == "halfwidth" else None
    d = compare(a, b, ctx.tol.level, floor)
    ratio = (d.mean_a / d.mean_b if d.mean_b > 0 else math.inf) if test.floor_rule == "ratio" else None
    c = Comparison(setting, against, part, d, _part_verdict(test, part, d, ctx.tol, ratio), ratio=ratio)
    if ratio is not None and not d.has_interval:
        c.by_ratio = getattr(ctx.tol, test.floor)
    c.paper_effect = part.paper_effect.get(ctx.settings[setting]["method"])
    if c.paper_effect is not None:
        tolerance = ctx.tol.neutral_tolerance if part.sign is None else None
        c.seeds_needed = seeds_needed(c.paper_effect, d.sd, ctx.tol.level, d.paired, tolerance)
        if c.seeds_needed is None:
            c.seeds_note = ("no spread to compute it from (one seed)" if math.isnan(d.sd) else
                            "the paper's difference lies outside the tolerance"
                            if tolerance is not None and abs(c.paper_effect) >= tolerance else
                            f"more than {MAX_SEEDS}")
    if d.n_a == 1 and d.n_b == 1 and part.quantity == "final_acc1":
        ca, cb = ctx.correct.get((setting, a.index[0])), ctx.correct.get((against, b.index[0]))
        if ca is not None and cb is not None and len(ca) == len(cb):
            c.mcnemar = mcnemar(ca, cb)
    return c


def _seeds_text(c: Comparison, unit: str) -> str:
    """'; to decide at the paper's -0.16 pts: about 12 seeds at this run's sd of the paired difference (0.55)'."""
    d = c.diff
    if c.paper_effect is None or math.isnan(d.sd):
        return ""
    sd = f"this run's sd of the {'paired difference' if d.paired else 'seeds (unpaired)'} ({fmt(d.sd)})"
    head = f"; to decide at the paper's {fmt(c.paper_effect, 2, True)}{' ' + unit if unit else ''}"
    if c.seeds_needed is None and c.seeds_note != f"more than {MAX_SEEDS}":
        return f"{head}: none ({c.seeds_note})"
    seeds = f"about {c.seeds_needed}" if c.seeds_needed is not None else c.seeds_note
    return f"{head}: {seeds} seeds at {sd}, {100 * POWER:g}% power"


def comparison_line(ctx: _Ctx, c: Comparison, with_setting: bool = True) -> str:
    """The evidence line of one comparison: the means, the difference with its test, interval and P(A>B),
    the verdict, the seeds needed at the paper's effect, and McNemar's test of two one-seed models."""
    q, d, tol = ev.QUANTITIES[c.part.quantity], c.diff, ctx.tol
    means = (f"{d.mean_a:.4g} vs {d.mean_b:.4g}" if q.digits > 3 else f"{fmt(d.mean_a, q.digits)} vs "
             f"{fmt(d.mean_b, q.digits)}")
    ratio = f" (ratio {fmt(c.ratio)}x)" if c.ratio is not None else ""
    by_ratio = f" (by the ratio floor {c.by_ratio:g}x)" if c.by_ratio is not None else ""
    who = describe_setting(c.setting, ctx.settings[c.setting])
    if c.against != ctx.ref:
        who += f" vs {describe_setting(c.against, ctx.settings[c.against])}"
    text = (f"{ctx.label(c.part.quantity, c.setting)} {means}{ratio}, difference "
            f"{describe_diff(d, q.unit, q.digits, tol.level)} -> {verdict_text(*c.verdict)}{by_ratio}"
            f"{_seeds_text(c, q.unit)}")
    if c.mcnemar is not None:
        m = c.mcnemar
        text += (f"; McNemar's exact test of the two final models on the same {m.images} validation images: "
                 f"{m.a_only} right only for {c.setting}, {m.b_only} only for {c.against}, p = {m.p:.3g} (whether "
                 "these two trained models differ on this test set, not whether the settings do)")
    return f"- {who}: {text}" if with_setting else text


def _rule(test: Test, tol: Tolerances) -> str:
    if len(test.parts) == 1 and test.parts[0].sign is None:
        return (f"neutral means the {100 * tol.level:g}% interval of the difference lies within "
                f"+-{tol.neutral_tolerance:g} pts")
    if len(test.parts) == 1:
        label = ev.QUANTITIES[test.parts[0].quantity].label
        return f"the claim needs the interval of the {label} difference to lie {test.parts[0].direction} 0"
    needs = " and ".join(f"the {ev.QUANTITIES[p.quantity].label} difference {p.direction} 0" for p in test.parts)
    return f"the claim needs {needs} (either on the other side refutes it)"


def _pairs(ctx: _Ctx, test: Test, targets: list[str]) -> list[tuple[str, str]]:
    """(setting, against) for each setting tested: the reference, or each early setting of its method."""
    if test.against == "reference":
        return [(n, ctx.ref) for n in targets]
    return [(n, e) for n in targets for e in ctx.named(test.against)
            if ctx.settings[n]["method"] == ctx.settings[e]["method"]]


def _ratio_reason(test: Test, floor: float | None, comps: list[dict], qual: str, reason: Reason) -> Reason:
    """The reason where one seed is decided on a ratio (C11: late over early loss against loss_ratio_floor)."""
    ratio = f"the {test.select}/{test.against} ratio"
    by_ratio = [c for c in comps if c["method"] not in ("paired t", "welch")] if floor is not None else []
    if by_ratio and len(by_ratio) == len(comps) and qual != "mixed":
        return Reason(text=f"one seed: decided on {ratio} against the stated floor: >= {floor:g}x holds, "
                           f"<= 1/{floor:g} does not hold, in between inconclusive")
    if qual == "one seed":
        return Reason(text=f"one seed: {reason.rule}, and a single run per setting gives no run-to-run spread "
                           f"(state {test.floor} to decide on {ratio})")
    if by_ratio:
        reason.notes.append(("clause", f"one-seed pairs were decided on {ratio} against x{floor:g}"))
    return reason


def evaluate_test(ctx: _Ctx, cid: str, test: Test) -> Verdict:
    """A claim's verdict from its test (claims.yaml): each part on each setting selected, against the
    reference or its early-aligned counterpart, by the interval rules; one verdict per setting (all parts
    must hold), then the settings' common verdict."""
    methods = test.methods or FEATURE_METHODS
    wanted = f"{'/'.join(test.methods) + ' ' if test.methods else ''}{test.select}-aligned"
    quantities = [p.quantity for p in test.parts]
    has = {q: ev.QUANTITIES[q].source for q in quantities}
    if test.against == "reference":
        if ctx.ref is None:
            return not_testable(cid, "the logit-KD reference is not configured", [ctx.wanted_reference()])
        lacking = [q for q in quantities if len(ctx.values(q, ctx.ref)) == 0]
        if lacking:
            return not_testable(cid, f"the logit-KD reference has no {has[lacking[0]]}", [ctx.ref])
    targets = ctx.named(test.select, methods)
    if not targets:
        return not_testable(cid, f"no {wanted} setting is configured", [wanted])
    if test.against != "reference":
        others = ctx.named(test.against)
        if not others or not _pairs(ctx, test, targets):
            missing = [f"{test.against}-aligned"] if not others else [
                f"{test.select}/{test.against} pairs of one method ({test.select}: {', '.join(targets)}; "
                f"{test.against}: {', '.join(others)})"]
            return not_testable(cid, f"needs {test.select}- and {test.against}-aligned settings of the same method",
                                missing)
    pairs = [(n, o) for n, o in _pairs(ctx, test, targets)
             if all(len(ctx.values(q, n)) and len(ctx.values(q, o)) for q in quantities)]
    present = list(dict.fromkeys(n for n, _ in pairs))
    absent = [n for n in targets if n not in present]
    if not pairs:
        needs = " and ".join(dict.fromkeys(has.values()))
        return not_testable(cid, f"no {wanted} setting has {needs}" + (
            f" (nor its {test.against}-aligned counterpart)" if test.against != "reference" else ""), absent)
    lines, comps, verdicts = [], [], []
    if test.against == "reference":
        for q in dict.fromkeys(quantities):
            v = ctx.values(q, ctx.ref)
            digits = ev.QUANTITIES[q].digits
            lines.append(f"- reference {describe_setting(ctx.ref, ctx.settings[ctx.ref])}: {ctx.label(q, ctx.ref)} "
                         f"{fmt(v.mean(), digits)} (mean of {len(v)} {plural(len(v))}: "
                         f"{', '.join(fmt(x, digits) for x in v)})")
    for n, o in pairs:
        cs = [_compare(ctx, test, p, n, o) for p in test.parts]
        verdicts.append(all_of([c.verdict for c in cs]))
        comps += [c.record() for c in cs]
        if len(cs) == 1:
            lines.append(comparison_line(ctx, cs[0]))
        else:
            who = describe_setting(n, ctx.settings[n])
            lines.append(f"- {who}: " + "; ".join(comparison_line(ctx, c, with_setting=False) for c in cs))
    for name in test.context:
        lines += CONTEXT[name](ctx, present)
    verdict, qual = combine(verdicts)
    reason = Reason(_rule(test, ctx.tol), floor=test.floor or "a noise floor")
    if test.floor_rule == "ratio":
        reason = _ratio_reason(test, getattr(ctx.tol, test.floor), comps, qual, reason)
    if absent:
        reason.notes.insert(0, ("aside", f"configured but without results, left out: {', '.join(absent)}"))
    reason.notes += [("clause", note) for note in test.notes]
    used = [ctx.ref, *present] if test.against == "reference" else sorted({x for p in pairs for x in p})
    return Verdict(cid, verdict, qual, reason, lines, comps, used)


# ---------------------------------------------------------------- context: evidence beside a verdict


def _projector_vs_parameter_free(ctx: _Ctx, present: list[str]) -> list[str]:
    """C9: the projector against the parameter-free late alignments."""
    lines = []
    for p in present:
        for s in ctx.named("late", ("spectral", "mse")):
            a, b = ctx.values("final_acc1", p), ctx.values("final_acc1", s)
            if len(a) and len(b):
                d = compare(a, b, ctx.tol.level, ctx.tol.noise_floor)
                lines.append(f"- context (not in the verdict): {p} minus {s}: "
                             f"{describe_diff(d, 'pts', 2, ctx.tol.level)}")
    return lines


def _profile_summary(name: str, profiles: dict) -> tuple[str, pd.DataFrame]:
    s = pd.DataFrame([ev.profile_stats(p) for p in profiles.values()])
    argmins = ", ".join(f"L{a}" for a in s["argmin"])
    return (f"{name}: min {fmt(s['min'].mean(), 3)} bits (at {argmins}), mean {fmt(s['mean'].mean(), 3)}, "
            f"U depth {fmt(s['u_depth'].mean(), 3)}, first {fmt(s['first'].mean(), 3)}, "
            f"last {fmt(s['last'].mean(), 3)} ({len(s)} {plural(len(s))})"), s


def _entropy_profiles(ctx: _Ctx, present: list[str]) -> list[str]:
    """C12: the profiles' shape (min, argmin, mean, U depth), the same for early and early+late settings, and
    the earliest checkpoint's entropy at each aligned layer (is it pinned low early? paper.md 4.4)."""
    ref_text, ref_s = _profile_summary(f"reference {ctx.ref}", ev.entropy_profiles(ctx.layers, ctx.ref))
    lines = [f"- final entropy profiles, mean over seeds: {ref_text}"]
    aligned = [n for n in ctx.settings if ctx.kind[n] in ("early", "late", "early_late")]
    for n in aligned:
        prof = ev.entropy_profiles(ctx.layers, n)
        if not prof or (ctx.kind[n] == "late" and n not in present):
            continue
        text, s = _profile_summary(describe_setting(n, ctx.settings[n]), prof)
        lines.append(f"- {'' if n in present else 'signature, not in the verdict: '}{text}; minimum minus reference "
                     f"{fmt(s['min'].mean() - ref_s['min'].mean(), 3, True)}, mean minus reference "
                     f"{fmt(s['mean'].mean() - ref_s['mean'].mean(), 3, True)} bits")
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
    return lines


CONTEXT = {"projector_vs_parameter_free": _projector_vs_parameter_free, "entropy_profiles": _entropy_profiles}


def evaluate(layers: pd.DataFrame, accuracy: pd.DataFrame, curves: pd.DataFrame, settings: dict,
             student_depth: int, teacher_depth: int, correct: dict | None = None, **tolerances) -> list[Verdict]:
    """One verdict per claim of claims.yaml, in its order; see the package docstring. `correct`:
    {(setting, seed): per-image correctness of the final model on the validation split} for McNemar's test
    of one-seed comparisons."""
    names = {f.name for f in fields(Tolerances)}
    unknown = sorted(set(tolerances) - names)
    if unknown:
        raise TypeError(f"unknown tolerance(s) {unknown}; known: {sorted(names)}")
    tol = Tolerances(**tolerances)
    layers = ev.with_columns(layers, ev.LAYER_NEEDS)
    accuracy = ev.with_columns(accuracy, ev.ACCURACY_NEEDS)
    curves = ev.with_columns(curves, ev.CURVE_NEEDS)
    ctx = _Ctx(layers, accuracy, curves, settings, student_depth, teacher_depth, tol, correct)
    return [claim_c1(ctx) if test.kind == "teacher_u_shape" else evaluate_test(ctx, cid, test)
            for cid, test in TESTS.items()]
