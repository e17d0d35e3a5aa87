"""Verdicts on the paper's claims (paper.md section 1) from one run's tables.

    python -m distdyn.claims --layers layers.csv --accuracy accuracy.csv --curves curves.csv \\
        --settings-json '{"logit": {"method": "logit", "pairs": []}, ...}' \\
        --student-depth 6 --teacher-depth 8 --out claims.md [--json claims.json]

The rules below are the spec of the verdicts; their knobs (`level`, `noise_floor`, ...) are the
config's `claims.*` keys, defaults in the config schema. The package: claims.yaml (each claim as data:
its statement, the paper's numbers and its test: the quantity, the settings it selects, what they are
compared against, the direction, the floor key, the paper's effect), statements.py (reads it),
settings.py (early/late alignment, the reference, the knobs), stats.py (the tests, all scipy's, and the
verdict rules on them), evidence.py (the quantities read from the tables), verdicts.py (`evaluate_test`,
the one function that evaluates every claim but C1's shape rule), render.py (records and markdown), cli.py.

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
* Every comparison is of one number per seed (accuracy: each run's final
  top-1, `final_acc1`). One seed gives every setting the same student initial
  weights and the same batches (what a setting adds, e.g. a projector, draws
  from a stream of its own), so when both settings have the same seeds (>= 2)
  the statistic is the mean per-seed difference and its paired t interval at
  `level` (default 95 %; scipy.stats.ttest_rel). With different seeds it is the
  difference of the seed means and its Welch (unequal-variance) t interval
  (ttest_ind, equal_var=False). Each evidence line names the test it used. A
  directional claim "holds" only if the interval excludes 0 in the claimed
  direction, "does not hold" if it excludes 0 in the opposite direction, and
  is "inconclusive (overlapping intervals)" otherwise.
* Beside each such interval, as evidence: P(A > B), the share of seeds at which
  the setting beats the other (unpaired: of all pairs of runs; ties count
  half), with a percentile bootstrap interval (scipy.stats.bootstrap, fixed
  generator; Bouthillier et al. 2021); and, where claims.yaml has the paper's
  difference for the setting's method, the seeds needed to decide the claim at
  that difference with 80 % power at this run's sd (of the paired difference,
  or of the seeds when unpaired), from scipy's noncentral t (`power`,
  `seeds_needed`; for C8 the interval must fall within the tolerance).
* With one seed on either side there is no spread to judge a difference
  against, so the verdict is "inconclusive (one seed)" - unless the user states
  a run-to-run noise floor (`noise_floor` in accuracy points, `entropy_noise_floor`
  in bits): the interval is then the difference +- that floor and the same
  rules apply. (The authors' own logs put ImageNet-scale seed noise at about
  0.1-0.15 points; a small-scale run has to measure its own.) When the two final
  models' per-image correctness on the validation split is known, McNemar's exact
  test (scipy.stats.binomtest on the images only one of them gets right) is
  given beside it: it says whether these two trained models differ on this test
  set, not whether the settings differ, and does not change the verdict.
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

from .cli import main
from .render import json_safe, record, records, render_markdown, settings_preamble
from .settings import Tolerances, classify_setting, describe_setting, reference_setting
from .statements import CLAIMS, PAPER, TESTS, Part, Test
from .stats import (HOLDS, INCONCLUSIVE, NOT_HOLD, NOT_TESTABLE, VERDICTS, Diff, McNemar, combine, compare,
                    describe_diff, directional, mcnemar, neutral, p_better, power, seeds_needed, t_quantile)
from .verdicts import Reason, Verdict, evaluate, evaluate_test

# What `python -m distdyn.claims` runs; nothing imports it, so it joins the fingerprint by name.
FINGERPRINT_FILES = ("__main__.py",)

__all__ = ["CLAIMS", "HOLDS", "INCONCLUSIVE", "NOT_HOLD", "NOT_TESTABLE", "PAPER", "TESTS", "VERDICTS", "Diff",
           "McNemar", "Part", "Reason", "Test", "Tolerances", "Verdict", "classify_setting", "combine", "compare",
           "describe_diff", "describe_setting", "directional", "evaluate", "evaluate_claims", "evaluate_test",
           "json_safe", "main", "mcnemar", "neutral", "p_better", "power", "record", "records", "reference_setting",
           "render_markdown", "seeds_needed", "settings_preamble", "t_quantile"]


def evaluate_claims(layers, accuracy, curves, settings: dict, student_depth: int, teacher_depth: int,
                    correct: dict | None = None, **tolerances) -> list[dict]:
    """One record per claim (C1, C5, C8, C9, C10, C11, C12), in that order: {claim_id, claim, evidence, paper,
    verdict, qualifier, reason, comparisons, settings_used}."""
    return records(evaluate(layers, accuracy, curves, settings, student_depth, teacher_depth, correct, **tolerances))


def _record(cid: str, evidence: str, verdict: str, qualifier: str, reason: str, comparisons=None,
            settings_used=None) -> dict:
    """A record from text parts (evidence and reason as written); the no-number rule applies as to any."""
    return record(Verdict(cid, verdict, qualifier, Reason(text=reason), [evidence] if evidence else [],
                          comparisons or [], settings_used or []))
