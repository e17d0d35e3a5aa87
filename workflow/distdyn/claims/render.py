"""The verdicts in words: each one's record (claims.json) and the markdown report (claims.md)."""
from __future__ import annotations

import math

import numpy as np

from .settings import Tolerances, classify_setting, pairs_text, reference_setting
from .statements import CLAIMS, PAPER
from .stats import HOLDS, INCONCLUSIVE, NOT_HOLD, NOT_TESTABLE, POWER, VERDICTS, verdict_text
from .verdicts import Reason, Verdict


def _rule_text(verdict: str, qual: str, reason: Reason) -> str:
    """The rule a verdict was judged by, worded for that verdict and qualifier."""
    rule = reason.rule
    if qual == "one seed":
        return (f"one seed: {rule}, and a single run per setting gives no run-to-run spread to judge the difference "
                f"against (state {reason.floor} to apply one)")
    if qual == "mixed":
        return f"mixed: the settings tested disagree ({rule})"
    if verdict == HOLDS:
        return f"{rule}; it does"
    if verdict == NOT_HOLD:
        return f"{rule}; the interval lies wholly on the other side"
    return f"{qual}: {rule}; the interval does not decide it"


def reason_text(v: Verdict) -> str:
    verdict, qual = v.withdrawn or (v.verdict, v.qualifier)
    r = v.reason
    text = r.text or _rule_text(verdict, qual, r)
    if r.missing:
        text += f"; missing: {', '.join(r.missing)}"
    for style, note in r.notes:
        text += f" ({note})" if style == "aside" else f"; {note}"
    return f"no numbers to base a verdict on ({text})" if v.withdrawn else text


def record(v: Verdict) -> dict:
    """One claim's record: {claim_id, claim, evidence, paper, verdict, qualifier, reason, comparisons,
    settings_used}."""
    return {"claim_id": v.claim_id, "claim": CLAIMS[v.claim_id], "evidence": "\n".join(v.evidence),
            "paper": PAPER[v.claim_id], "verdict": v.verdict, "qualifier": v.qualifier, "reason": reason_text(v),
            "comparisons": v.comparisons, "settings_used": v.settings_used}


def records(verdicts: list[Verdict]) -> list[dict]:
    return [record(v) for v in verdicts]


def seeds_cell(claim: dict) -> str:
    """'spectral_last 30, projector_last 16' (several parts: 'spectral_last final_acc1 30, ...'); '-' where the
    claim has no paper effect or no spread to compute it from."""
    comps = [c for c in claim["comparisons"] if c.get("paper_effect") is not None and c.get("sd") is not None]
    several = len({c["quantity"] for c in comps}) > 1
    cells = [f"{c['setting']}{' ' + c['quantity'] if several else ''} "
             f"{c['seeds_needed'] if c['seeds_needed'] is not None else '(' + c['seeds_note'] + ')'}" for c in comps]
    return ", ".join(cells) or "-"


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
            "| Claim | Statement | Verdict | Seeds to decide at the paper's effect |", "|---|---|---|---|"]
    for c in claims:
        out.append(f"| [{c['claim_id']}](#{c['claim_id'].lower()}) | {_cell(c['claim'])} | "
                   f"**{_cell(verdict_text(c['verdict'], c.get('qualifier', '')))}** | {seeds_cell(c)} |")
    for c in claims:
        out += ["", f"## {c['claim_id']}", "", f"**Claim.** {c['claim']}", "", "**Evidence (this run).**", ""]
        out.append(c["evidence"] if c["evidence"] else "- none: the claim cannot be tested with this run")
        out += ["", f"**Paper.** {c['paper']}", "",
                f"**Verdict.** {verdict_text(c['verdict'], c.get('qualifier', ''))}", "",
                f"**Reason.** {c['reason']}"]
    return "\n".join(out) + "\n"


def settings_preamble(settings: dict, student_depth: int, teacher_depth: int, tol: Tolerances | None = None) -> str:
    """The depths, the interval rules in force and a table of the settings with their alignment."""
    tol = tol or Tolerances()
    ref = reference_setting(settings, tol.reference)
    rows = ["| Setting | Method | Pairs (student<->teacher, 0-based) | Alignment |", "|---|---|---|---|"]
    for n, s in settings.items():
        kind = classify_setting(s, student_depth).replace("_", "+")
        label = f"{_cell(n)}{' (reference)' if n == ref else ''}"
        rows.append(f"| {label} | {s.get('method', 'none')} | {pairs_text(s) or '-'} | {kind} |")
    floor = "none (one seed is inconclusive)" if tol.noise_floor is None else f"{tol.noise_floor:g} pts"
    return (f"Student depth {student_depth}, teacher depth {teacher_depth}. Intervals: {100 * tol.level:g}% "
            "two-sided over seeds, paired t when both settings have the same seeds (a seed gives every setting the "
            "same initial weights and batches), Welch t otherwise; P(A>B), the chance that a setting beats the other "
            "at a new seed, with a percentile bootstrap interval; seeds to decide: at the paper's difference and this "
            f"run's sd, {100 * POWER:g}% power; neutrality tolerance +-{tol.neutral_tolerance:g} pts; "
            f"one-seed noise floor: {floor}. Rules: `python -c 'import distdyn.claims as c; help(c)'`.\n\n"
            + "\n".join(rows))


def json_safe(obj):
    """NaN as null, inf as "inf", numpy scalars as Python ones."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return None if math.isnan(x) else ("inf" if math.isinf(x) else x)
    return obj
