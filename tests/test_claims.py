"""The claims logic (distdyn.claims) on small hand-made tables."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distdyn import claims as C
from helpers import ROOT

S_DEPTH, T_DEPTH = 6, 8
SETTINGS = {
    "baseline": {"method": "none", "pairs": []},
    "logit": {"method": "logit", "pairs": []},
    "spectral_first": {"method": "spectral", "pairs": [[0, 0]]},
    "spectral_last": {"method": "spectral", "pairs": [[5, 7]]},
    "spectral_first_last": {"method": "spectral", "pairs": [[0, 0], [5, 7]]},
    "projector_first": {"method": "projector", "pairs": [[0, 0]]},
    "projector_last": {"method": "projector", "pairs": [[5, 7]]},
}


# ---------------------------------------------------------------- table builders


def accuracy(finals: dict, feat: dict | None = None) -> pd.DataFrame:
    """finals: setting -> list of per-seed final top-1 (seed = position); feat: setting -> per-seed loss."""
    rows = [{"role": "teacher", "setting": "teacher", "seed": 0, "final_acc1": 99.0, "final_acc5": 100.0,
             "best_acc1": 99.0, "best_acc5": 100.0, "best_epoch": 10, "epochs": 10, "final_train_loss_feat": np.nan}]
    for name, values in finals.items():
        for seed, v in enumerate(values):
            loss = (feat or {}).get(name, [np.nan] * len(values))[seed]
            rows.append({"role": "student", "setting": name, "seed": seed, "final_acc1": v, "final_acc5": 99.0,
                         "best_acc1": v, "best_acc5": 99.0, "best_epoch": 8, "epochs": 8,
                         "final_train_loss_feat": loss})
    return pd.DataFrame(rows)


def curves(runs: dict, epochs: int = 8) -> pd.DataFrame:
    """runs: setting -> list over seeds of (early_acc, final_acc): the first quarter at early_acc, then final_acc."""
    rows = []
    for name, seeds in runs.items():
        for seed, (early, final) in enumerate(seeds):
            for e in range(1, epochs + 1):
                acc = early if e <= math.ceil(0.25 * epochs) else final
                rows.append({"role": "student", "setting": name, "seed": seed, "epoch": e, "lr": 1e-3,
                             "train_loss": 1.0, "train_loss_base": 0.1, "train_loss_feat": 0.0,
                             "train_loss_dist": 0.9, "test_loss": 1.0, "test_acc1": acc, "test_acc5": 99.0,
                             "seconds": 1.0, "images_per_s": 100.0})
    return pd.DataFrame(rows)


def teacher_layers(values, half_width=0.05, metric="entropy") -> pd.DataFrame:
    v = np.asarray(values, float)
    hw = np.broadcast_to(np.asarray(half_width, float), v.shape)
    return pd.DataFrame({"model": "teacher", "role": "teacher", "setting": "teacher", "seed": 0, "epoch": 10,
                         "checkpoint": "final", "layer": np.arange(1, len(v) + 1), "metric": metric, "value": v,
                         "ci_low": v - hw, "ci_high": v + hw})


def student_layers(profiles: dict, epoch: int = 8) -> pd.DataFrame:
    """profiles: setting -> list over seeds of the final entropy profile."""
    frames = []
    for name, seeds in profiles.items():
        for seed, prof in enumerate(seeds):
            v = np.asarray(prof, float)
            for label, ep, vals in ((f"epoch_{epoch // 2}", epoch // 2, v + 0.5), ("final", epoch, v)):
                frames.append(pd.DataFrame({"model": f"{name}/seed_{seed}/{label}", "role": "student",
                                            "setting": name, "seed": seed, "epoch": ep, "checkpoint": label,
                                            "layer": np.arange(1, len(v) + 1), "metric": "entropy",
                                            "value": vals, "ci_low": np.nan, "ci_high": np.nan}))
    return pd.concat(frames, ignore_index=True)


EMPTY_LAYERS = teacher_layers([1.0, 0.5, 1.0]).iloc[0:0]


def run(layers=None, acc=None, cur=None, settings=SETTINGS, **tol) -> dict:
    layers = EMPTY_LAYERS if layers is None else layers
    acc = accuracy({}) if acc is None else acc
    cur = curves({}) if cur is None else cur
    return {r["claim_id"]: r for r in C.evaluate_claims(layers, acc, cur, settings, S_DEPTH, T_DEPTH, **tol)}


# ---------------------------------------------------------------- settings and statistics


def test_classify_settings():
    kinds = {n: C.classify_setting(s, S_DEPTH) for n, s in SETTINGS.items()}
    assert kinds == {"baseline": "none", "logit": "logit", "spectral_first": "early", "spectral_last": "late",
                     "spectral_first_last": "early_late", "projector_first": "early", "projector_last": "late"}
    assert C.classify_setting({"method": "mse", "pairs": [[2, 3]]}, S_DEPTH) == "other"
    assert C.classify_setting({"method": "mse", "pairs": [[0, 0], [0, 3]]}, S_DEPTH) == "early"
    assert C.classify_setting({"method": "spectral", "pairs": [[0, 0]]}, 1) == "other"  # first == last
    assert C.reference_setting({"kd": {"method": "logit"}, "x": {"method": "none"}}) == "kd"


def test_welch_interval_matches_hand_computation():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
    d = C.compare(a, b, 0.95)
    va, vb = 1.0 / 3, 4.0 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert d.diff == pytest.approx(-4.0)
    assert d.df == pytest.approx(df)
    half = C.t_quantile(0.975, df) * math.sqrt(va + vb)
    assert (d.low, d.high) == pytest.approx((-4.0 - half, -4.0 + half))
    assert C.t_quantile(0.975, 1e9) == pytest.approx(1.96, abs=1e-3)


@pytest.mark.parametrize("df, q", [(1, 12.7062047362), (2, 4.3026527297), (10, 2.2281388520), (30, 2.0422724563)])
def test_t_quantile_table_values(df, q):
    assert C.t_quantile(0.975, df) == pytest.approx(q, rel=1e-8)


def test_t_quantile_agrees_with_scipy_at_fractional_df():
    special = pytest.importorskip("scipy.special")
    for df in (1.3, 2.7, 3.9, 17.2):
        for p in (0.9, 0.975, 0.995):
            assert C.t_quantile(p, df) == pytest.approx(float(special.stdtrit(df, p)), rel=1e-8)
    assert C.compare([1.0], [2.0]).method == "one seed"
    assert (C.compare([1.0], [2.0], floor=0.5).low, C.compare([1.0], [2.0], floor=0.5).high) == (-1.5, -0.5)


def test_paired_interval_is_scipys_ttest_rel_when_the_seeds_match():
    """Seeds in any order: paired by seed, the interval is ttest_rel's on the seed-aligned values."""
    stats = pytest.importorskip("scipy.stats")
    a = pd.Series([76.1, 75.2, 77.0, 76.4], index=[2, 0, 3, 1])
    b = pd.Series([75.5, 75.6, 76.0, 76.3], index=[0, 1, 2, 3])
    d = C.compare(a, b, 0.9)
    x, y = a.sort_index().to_numpy(), b.to_numpy()
    ref = stats.ttest_rel(x, y)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert d.method == "paired t" and d.paired and d.df == 3
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert d.diff == pytest.approx((x - y).mean()) and d.sd == pytest.approx(np.std(x - y, ddof=1))
    assert "paired t (same seeds) 90% CI" in C.describe_diff(d, "pts", 2, 0.9)


def test_unmatched_seeds_use_welch():
    stats = pytest.importorskip("scipy.stats")
    a = pd.Series([76.1, 75.2, 77.0], index=[0, 1, 2])
    b = pd.Series([75.5, 75.6, 76.0], index=[0, 1, 5])
    d = C.compare(a, b)
    ci = stats.ttest_ind(a.to_numpy(), b.to_numpy(), equal_var=False).confidence_interval()
    assert d.method == "welch" and (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert "Welch t (seeds not matched) 95% CI" in C.describe_diff(d, "pts", 2, 0.95)
    assert C.compare([1.0, 2.0], [1.5, 2.5]).method == "welch"  # no seeds to pair on


def test_p_better_and_its_bootstrap_interval_are_scipys():
    stats = pytest.importorskip("scipy.stats")
    a = np.array([76.1, 75.2, 77.0, 76.4, 75.9])
    b = np.array([75.5, 75.6, 76.0, 76.4, 75.0])
    p, lo, hi = C.p_better(a, b, 0.95, paired=True)
    assert p == pytest.approx((3 + 0.5) / 5)  # three seeds won, one lost, one tie
    ref = stats.bootstrap((a - b,), lambda d, axis: np.mean((d > 0) + 0.5 * (d == 0), axis=axis),
                          method="percentile", n_resamples=9999, rng=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    p, lo, hi = C.p_better(a, b, 0.95, paired=False)
    assert p == pytest.approx(stats.mannwhitneyu(a, b).statistic / 25)
    assert 0 <= lo <= p <= hi <= 1
    assert C.p_better(a, b) == C.p_better(a, b)  # a fixed generator: the same interval every run


@pytest.mark.parametrize("effect, sd, paired, n", [
    (0.1, 0.15, True, 20), (0.2, 0.15, True, 7), (0.3, 0.15, True, 5),  # the numbers
    (0.5, 1.0, True, 34), (-0.5, 1.0, True, 34), (0.5, 1.0, False, 64),  # G*Power's tables (d = 0.5)
])
def test_seeds_needed_from_scipys_noncentral_t(effect, sd, paired, n):
    """The fewest seeds at which a two-sided t test at 5 % has 80 % power, checked on scipy.stats.nct."""
    stats = pytest.importorskip("scipy.stats")
    assert C.seeds_needed(effect, sd, 0.95, paired) == n

    def power(k):
        df, nc = (k - 1, effect / sd * math.sqrt(k)) if paired else (2 * k - 2, effect / sd * math.sqrt(k / 2))
        q = stats.t.ppf(0.975, df)
        return stats.nct.sf(q, df, nc) + stats.nct.cdf(-q, df, nc)

    assert power(n) >= 0.8 > power(n - 1)
    assert C.power(effect, sd, n, 0.95, paired) == pytest.approx(power(n))


def test_seeds_needed_for_a_neutral_claim_and_where_there_is_no_number():
    n = C.seeds_needed(0.06, 0.6, 0.95, True, tolerance=1.0)
    assert C.power(0.06, 0.6, n, tolerance=1.0) >= 0.8 > C.power(0.06, 0.6, n - 1, tolerance=1.0)
    assert C.seeds_needed(0.5, 0.6, tolerance=1.0) > n  # nearer the band's edge: more seeds
    assert C.seeds_needed(1.2, 0.6, tolerance=1.0) is None  # the paper's difference is outside the band
    assert C.seeds_needed(0.0, 0.6) is None and C.seeds_needed(0.1, math.nan) is None
    assert C.seeds_needed(1e-4, 1.0) is None  # beyond MAX_SEEDS
    # a large effect: scipy's nct.cdf far in the lower tail gives NaN (e.g. at noncentrality 10), power does not
    assert np.isfinite(C.power(2.467, 0.55, np.arange(2, 60))).all() and C.seeds_needed(2.467, 0.55) == 3


def test_mcnemar_exact_on_hand_made_correctness():
    """10 images only A gets right, 2 only B, 88 both or neither: p = 2 * P(X <= 2), X ~ Bin(12, 1/2)."""
    a = np.array([1] * 10 + [0] * 2 + [1] * 60 + [0] * 28, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 60 + [0] * 28, bool)
    m = C.mcnemar(a, b)
    assert (m.images, m.a_only, m.b_only) == (100, 10, 2)
    assert m.p == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert C.mcnemar(a, a).p == 1.0
    with pytest.raises(ValueError, match="different shapes"):
        C.mcnemar(a, b[:-1])


def test_one_seed_comparisons_get_mcnemar_but_keep_their_verdict():
    acc = accuracy({"logit": [85.0], "spectral_last": [80.0]})
    right = np.arange(100) < 85
    correct = {("logit", 0): right, ("spectral_last", 0): np.arange(100) < 80}
    r = run(acc=acc, correct=correct)["C5"]
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "one seed")
    assert "McNemar's exact test of the two final models on the same 100 validation images: 0 right only for " \
           "spectral_last, 5 only for logit, p = 0.0625" in r["evidence"]
    assert "not whether the settings do" in r["evidence"]
    assert r["comparisons"][0]["mcnemar"] == {"images": 100, "a_only": 0, "b_only": 5, "p": 0.0625}
    assert "McNemar" not in run(acc=acc)["C5"]["evidence"]  # no per-image correctness, no test


def test_claims_say_which_test_and_how_many_seeds():
    records = {r["claim_id"]: r for r in full_run(3)}
    c5 = records["C5"]
    assert "paired t (same seeds) 95% CI" in c5["evidence"] and "P(A>B) 0.00 [0.00, 0.00]" in c5["evidence"]
    # spectral_last - logit per seed: -5.0, -4.7, -5.3 (sd 0.3): 30 seeds to see the paper's -0.16
    assert "to decide at the paper's -0.16 pts: about 30 seeds at this run's sd of the paired difference " \
           "(0.30), 80% power" in c5["evidence"]
    comp = next(c for c in c5["comparisons"] if c["setting"] == "spectral_last")
    assert (comp["method"], comp["paper_effect"], comp["seeds_needed"]) == ("paired t", -0.16, 30)
    assert comp["seeds_needed"] == C.seeds_needed(-0.16, 0.3)
    md = C.render_markdown(list(records.values()), "Claims")
    assert "| **holds** | spectral_last 30, projector_last 16 |" in md
    assert "spectral_last early_mean_acc1 2, spectral_last final_acc1 30" in md  # C10's two parts
    tight = run(acc=accuracy({"logit": [85.0, 85.2, 84.8], "spectral_first": [85.1, 85.3, 84.0]}),
                neutral_tolerance=0.05)["C8"]  # the paper's +0.06 cannot be shown within +-0.05
    assert "to decide at the paper's +0.06 pts: none (the paper's difference lies outside the tolerance)" \
           in tight["evidence"]
    assert tight["comparisons"][0]["seeds_needed"] is None
    unmatched = accuracy({"logit": [85.0, 85.2, 84.8], "spectral_last": [80.0, 80.5]})
    assert "Welch t (seeds not matched)" in run(acc=unmatched)["C5"]["evidence"]


def test_unknown_tolerance_is_an_error():
    with pytest.raises(TypeError, match="unknown tolerance"):
        run(noise_flor=0.1)


# ---------------------------------------------------------------- C1


def test_c1_holds_for_an_interior_minimum_below_both_ends():
    r = run(layers=teacher_layers([3.0, 2.2, 1.5, 1.8, 2.6, 3.4]))["C1"]
    assert r["verdict"] == "holds"
    assert "L3 1.500" in r["evidence"]


def test_c1_does_not_hold_for_a_monotone_profile():
    r = run(layers=teacher_layers([1.0, 1.4, 2.0, 2.5, 3.1, 3.6]))["C1"]
    assert r["verdict"] == "does not hold"
    assert "first layer" in r["reason"] and "monotone increasing" in r["evidence"]


def test_c1_inconclusive_when_the_minimum_interval_overlaps_an_end():
    r = run(layers=teacher_layers([2.0, 1.9, 1.95, 2.5], half_width=[0.2, 0.2, 0.2, 0.2]))["C1"]
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "overlapping intervals")
    assert "first" in r["reason"] and "last" not in r["reason"].split("overlaps")[1]


def test_c1_inconclusive_without_bootstrap_intervals():
    layers = teacher_layers([3.0, 1.0, 3.0]).assign(ci_low=np.nan, ci_high=np.nan)
    r = run(layers=layers)["C1"]
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "no intervals")


def test_c1_shows_both_histogram_ranges_and_the_outlier_channels():
    """A U on the file-wide range only, with a huge channel in the last layer: the verdict is the
    configured entropy's, and the evidence says the U depends on the range."""
    u = [3.0, 2.2, 1.5, 1.8, 2.6, 3.4]
    layers = pd.concat([teacher_layers(u), teacher_layers(u, metric="entropy_global"),
                        teacher_layers([4.0, 4.2, 4.4, 4.5, 4.6, 4.7], metric="entropy_per_layer"),
                        teacher_layers([1.2, 1.3, 1.5, 1.4, 2.0, 40.0], metric="outlier_ratio"),
                        teacher_layers([0, 0, 0, 0, 0, 2], half_width=0, metric="outlier_channels")],
                       ignore_index=True)
    r = run(layers=layers)["C1"]
    assert r["verdict"] == "holds"
    ev = r["evidence"]
    assert "- entropy_global (the file-wide histogram range, as the authors' code; the entropy above): first " \
           "3.000, minimum L3 1.500, last 3.400 bits; U-shape by the same rule: holds" in ev
    assert "- entropy_per_layer (each layer's own histogram range): first 4.000, minimum L1 4.000, last 4.700 bits; " \
           "U-shape by the same rule: does not hold" in ev
    assert "L1 (first) 1.20 (0 channels), L3 (minimum) 1.50 (0 channels), L6 (last, largest) 40.00 (2 channels)" in ev
    assert "depends on the histogram range (holds with the file-wide range, does not hold with each layer's own)" in ev
    assert "context, not part of the verdict" in r["reason"]
    by_quantity = {c.get("quantity"): c for c in r["comparisons"]}
    assert by_quantity["entropy_per_layer"]["verdict"] == "does not hold"
    assert [c["layer"] for c in r["comparisons"] if c.get("quantity") == "outlier_ratio"] == [1, 3, 6]


def test_c1_evidence_without_the_extra_metrics_is_unchanged():
    r = run(layers=teacher_layers([3.0, 2.2, 1.5, 1.8, 2.6, 3.4]))["C1"]
    assert "outlier" not in r["evidence"] and "histogram range" not in r["evidence"]
    assert r["evidence"].count("\n") == 2 and "context" not in r["reason"]


def test_c1_uses_the_teacher_not_the_students():
    layers = pd.concat([teacher_layers([3.0, 1.0, 3.0]),
                        student_layers({"logit": [[1.0, 2.0, 3.0]]})], ignore_index=True)
    assert run(layers=layers)["C1"]["verdict"] == "holds"


# ---------------------------------------------------------------- C5 (and C9, which shares its logic)


def test_c5_holds_when_late_alignment_is_clearly_below_logit():
    acc = accuracy({"logit": [85.0, 85.5, 84.5], "spectral_last": [80.0, 80.5, 79.5],
                    "projector_last": [79.0, 79.4, 78.6]})
    res = run(acc=acc)
    r = res["C5"]
    assert r["verdict"] == "holds", r
    assert "-5.00 pts" in r["evidence"] and "paired t (same seeds) 95% CI" in r["evidence"]
    assert {c["setting"] for c in r["comparisons"]} == {"spectral_last", "projector_last"}
    assert res["C9"]["verdict"] == "holds"
    assert [c["setting"] for c in res["C9"]["comparisons"]] == ["projector_last"]
    assert "projector_last minus spectral_last" in res["C9"]["evidence"]


def test_c5_does_not_hold_when_late_alignment_is_clearly_above_logit():
    acc = accuracy({"logit": [80.0, 80.5, 79.5], "spectral_last": [85.0, 85.5, 84.5]})
    r = run(acc=acc)["C5"]
    assert r["verdict"] == "does not hold"


def test_c5_inconclusive_with_overlapping_intervals():
    acc = accuracy({"logit": [80.0, 84.0, 82.0], "spectral_last": [81.5, 79.5, 83.0]})
    r = run(acc=acc)["C5"]
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "overlapping intervals")


def test_c5_mixed_settings_are_inconclusive():
    acc = accuracy({"logit": [85.0, 85.5, 84.5], "spectral_last": [80.0, 80.5, 79.5],
                    "projector_last": [90.0, 90.5, 89.5]})
    r = run(acc=acc)["C5"]
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "mixed")
    assert sorted(c["verdict"] for c in r["comparisons"]) == ["does not hold", "holds"]


def test_single_seed_is_inconclusive():
    acc = accuracy({"logit": [85.0], "spectral_last": [80.0], "spectral_first": [85.1]})
    res = run(acc=acc)
    for cid in ("C5", "C8"):
        assert (res[cid]["verdict"], res[cid]["qualifier"]) == ("inconclusive", "one seed")
        assert res[cid]["reason"].startswith("one seed")
        assert "-5.00 pts" in res["C5"]["evidence"]


def test_one_seed_on_one_side_is_still_one_seed():
    acc = accuracy({"logit": [85.0], "spectral_last": [80.0, 80.2, 79.9]})
    assert run(acc=acc)["C5"]["qualifier"] == "one seed"


def test_single_seed_with_a_stated_noise_floor():
    acc = accuracy({"logit": [85.0], "spectral_last": [80.0]})
    assert run(acc=acc, noise_floor=0.5)["C5"]["verdict"] == "holds"
    r = run(acc=acc, noise_floor=6.0)["C5"]
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "overlapping intervals")
    assert "noise floor" in r["evidence"]


# ---------------------------------------------------------------- C8 tolerance rule


def c8(first, logit=(80.0, 80.2, 79.8), **tol):
    return run(acc=accuracy({"logit": list(logit), "spectral_first": list(first)}), **tol)["C8"]


def test_c8_holds_within_the_tolerance():
    r = c8([80.1, 80.3, 79.9])
    assert r["verdict"] == "holds"
    assert "+-1 pts" in r["reason"]


def test_c8_does_not_hold_outside_the_tolerance():
    assert c8([83.0, 83.2, 82.8])["verdict"] == "does not hold"
    assert c8([77.0, 77.2, 76.8])["verdict"] == "does not hold"


def test_c8_inconclusive_when_the_interval_straddles_the_tolerance():
    r = c8([80.5, 81.5, 81.0])
    assert (r["verdict"], r["qualifier"]) == ("inconclusive", "interval straddles the tolerance")


def test_c8_tolerance_is_a_parameter():
    # +1.03 pts, paired interval about [0.89, 1.18] (seed by seed +1.0, +1.1, +1.0: paired, so the
    # interval is that of these three differences, not of two groups of three)
    first = [81.0, 81.3, 80.8]
    assert c8(first)["verdict"] != "holds"
    assert c8(first, neutral_tolerance=2.0)["verdict"] == "holds"
    assert c8(first, neutral_tolerance=0.2)["verdict"] == "does not hold"


# ---------------------------------------------------------------- not testable


def test_not_testable_when_settings_are_missing():
    settings = {"logit": SETTINGS["logit"], "spectral_first": SETTINGS["spectral_first"]}
    acc = accuracy({"logit": [80.0, 80.2], "spectral_first": [80.0, 80.1]})
    res = run(acc=acc, settings=settings)
    for cid in ("C5", "C9", "C10", "C11", "C12"):
        assert res[cid]["verdict"] == "not testable", cid
        assert "missing:" in res[cid]["reason"]
    assert "late-aligned" in res["C5"]["reason"]
    assert res["C8"]["verdict"] == "holds"
    assert res["C1"]["verdict"] == "not testable" and "teacher" in res["C1"]["reason"]


def test_not_testable_without_a_logit_reference():
    settings = {k: v for k, v in SETTINGS.items() if k != "logit"}
    acc = accuracy({"spectral_last": [80.0, 80.2]})
    res = run(acc=acc, settings=settings)
    for cid in ("C5", "C8", "C9", "C10", "C12"):
        assert res[cid]["verdict"] == "not testable"
        assert "logit" in res[cid]["reason"]


def test_configured_settings_without_results_are_not_testable():
    acc = accuracy({"logit": [80.0, 80.2]})  # spectral_last and the others configured, never run
    r = run(acc=acc)["C5"]
    assert r["verdict"] == "not testable"
    assert "spectral_last" in r["reason"] and "projector_last" in r["reason"]


def test_settings_without_results_are_named_but_the_rest_is_judged():
    acc = accuracy({"logit": [85.0, 85.5, 84.5], "spectral_last": [80.0, 80.5, 79.5]})
    r = run(acc=acc)["C5"]
    assert r["verdict"] == "holds"
    assert "projector_last" in r["reason"]


# ---------------------------------------------------------------- C10, C11, C12


def test_c10_early_speed_up_then_lower_final():
    acc = accuracy({"logit": [85.0, 85.5, 84.5], "spectral_last": [80.0, 80.5, 79.5]})
    cur = curves({"logit": [(20.0, 85.0), (21.0, 85.5), (19.0, 84.5)],
                  "spectral_last": [(30.0, 80.0), (31.0, 80.5), (29.0, 79.5)]})
    r = run(acc=acc, cur=cur)["C10"]
    assert r["verdict"] == "holds", r
    assert "epochs 1-2 of 8" in r["evidence"] and "+10.00 pts" in r["evidence"]
    # No early lead: the first half of the claim fails.
    cur = curves({"logit": [(30.0, 85.0), (31.0, 85.5), (29.0, 84.5)],
                  "spectral_last": [(20.0, 80.0), (21.0, 80.5), (19.0, 79.5)]})
    assert run(acc=acc, cur=cur)["C10"]["verdict"] == "does not hold"


def test_c11_late_features_fit_worse():
    finals = {"logit": [80.0, 80.0], "spectral_first": [80.0, 80.0], "spectral_last": [80.0, 80.0]}
    acc = accuracy(finals, feat={"spectral_first": [0.01, 0.012], "spectral_last": [0.40, 0.45]})
    r = run(acc=acc)["C11"]
    assert r["verdict"] == "holds"
    assert "spectral_last" in r["evidence"] and re.search(r"ratio \d+\.\d+x", r["evidence"])
    one = accuracy({"spectral_first": [80.0], "spectral_last": [80.0]},
                   feat={"spectral_first": [0.01], "spectral_last": [0.4]})
    assert run(acc=one)["C11"]["qualifier"] == "one seed"
    assert run(acc=one, loss_ratio_floor=2.0)["C11"]["verdict"] == "holds"


def test_c12_late_alignment_deepens_the_entropy_u():
    logit = [[2.4, 2.0, 1.8, 1.9, 2.5, 3.3], [2.5, 2.0, 1.85, 1.9, 2.5, 3.3], [2.45, 2.0, 1.75, 1.9, 2.5, 3.3]]
    late = [[1.7, 1.2, 0.9, 0.8, 1.4, 2.2], [1.7, 1.2, 0.9, 0.85, 1.4, 2.2], [1.7, 1.2, 0.9, 0.75, 1.4, 2.2]]
    first = [[1.1, 2.0, 2.2, 2.3, 2.8, 3.4]] * 3
    layers = student_layers({"logit": logit, "spectral_last": late, "spectral_first": first})
    r = run(layers=layers)["C12"]
    assert r["verdict"] == "holds", r
    assert "at L4" in r["evidence"] and "signature, not in the verdict: spectral_first" in r["evidence"]
    assert "earliest checkpoint (epoch 4), aligned layer L6" in r["evidence"]
    one = student_layers({"logit": logit[:1], "spectral_last": late[:1]})
    assert run(layers=one)["C12"]["qualifier"] == "one seed"
    assert run(layers=one, entropy_noise_floor=0.1)["C12"]["verdict"] == "holds"


# ---------------------------------------------------------------- every verdict has numbers; output


def full_run(seeds: int):
    k = slice(0, seeds)
    acc = accuracy({"logit": [85.0, 85.2, 84.8][k], "spectral_first": [85.1, 85.2, 84.9][k],
                    "spectral_last": [80.0, 80.5, 79.5][k], "projector_last": [79.0, 79.5, 78.5][k],
                    "projector_first": [84.9, 85.1, 84.8][k], "spectral_first_last": [84.0, 84.2, 84.1][k]},
                   feat={"spectral_first": [0.01, 0.012, 0.011][k], "spectral_last": [0.4, 0.45, 0.5][k],
                         "projector_first": [0.1, 0.12, 0.11][k], "projector_last": [0.2, 0.25, 0.22][k],
                         "logit": [0, 0, 0][k], "spectral_first_last": [0.2, 0.2, 0.2][k]})
    cur = curves({"logit": [(20.0, 85.0), (21.0, 85.5), (19.0, 84.5)][k],
                  "spectral_last": [(30.0, 80.0), (31.0, 80.5), (29.0, 79.5)][k],
                  "projector_last": [(25.0, 79.0), (26.0, 79.5), (24.0, 78.5)][k]})
    profiles = {"logit": [[2.4, 2.0, 1.8, 1.9, 2.5, 3.3], [2.5, 2.0, 1.85, 1.9, 2.5, 3.3],
                          [2.45, 2.0, 1.75, 1.9, 2.5, 3.3]][k],
                "spectral_last": [[1.7, 1.2, 0.9, 0.8, 1.4, 2.2], [1.7, 1.2, 0.9, 0.85, 1.4, 2.2],
                                  [1.7, 1.2, 0.9, 0.75, 1.4, 2.2]][k]}
    layers = pd.concat([teacher_layers([3.0, 2.2, 1.5, 1.8, 2.6, 3.4, 3.5, 3.6]), student_layers(profiles)],
                       ignore_index=True)
    return C.evaluate_claims(layers, acc, cur, SETTINGS, S_DEPTH, T_DEPTH)


@pytest.mark.parametrize("seeds", [1, 3])
def test_every_verdict_has_numbers(seeds):
    records = full_run(seeds)
    assert [r["claim_id"] for r in records] == ["C1", "C5", "C8", "C9", "C10", "C11", "C12"]
    for r in records:
        assert set(r) >= {"claim_id", "claim", "evidence", "paper", "verdict", "reason"}
        assert r["verdict"] in C.VERDICTS
        assert r["verdict"] != "not testable", r
        assert re.search(r"\d", r["evidence"]), r
        assert re.search(r"\d", r["paper"])
    if seeds == 1:
        assert all(r["qualifier"] == "one seed" for r in records if r["claim_id"] != "C1")
    else:
        assert {r["claim_id"]: r["verdict"] for r in records} == {
            "C1": "holds", "C5": "holds", "C8": "holds", "C9": "holds", "C10": "holds", "C11": "holds",
            "C12": "holds"}


def test_a_verdict_without_numbers_is_refused():
    r = C._record("C5", "no digits here", "holds", "", "x")
    assert r["verdict"] == "not testable"


def test_render_markdown():
    records = full_run(3)
    md = C.render_markdown(records, "Claims")
    assert md.startswith("# Claims\n")
    assert "| Claim | Statement | Verdict | Seeds to decide at the paper's effect |" in md
    for cid in ("C1", "C5", "C8", "C9", "C10", "C11", "C12"):
        assert f"\n## {cid}\n" in md
    assert md.count("**Paper.**") == 7 and md.count("**Reason.**") == 7
    assert "76.79" in md  # the paper's number for C5


def test_cli_writes_markdown_and_json(tmp_path):
    acc = accuracy({"logit": [85.0, 85.5, 84.5], "spectral_last": [80.0, 80.5, 79.5]})
    cur = curves({"logit": [(20.0, 85.0)] * 3, "spectral_last": [(30.0, 80.0)] * 3})
    layers = teacher_layers([3.0, 1.0, 3.0])
    for name, df in (("layers", layers), ("accuracy", acc), ("curves", cur)):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    settings = {k: SETTINGS[k] for k in ("logit", "spectral_last")}
    out, js = tmp_path / "out" / "claims.md", tmp_path / "claims.json"
    rc = C.main(["--layers", str(tmp_path / "layers.csv"), "--accuracy", str(tmp_path / "accuracy.csv"),
                 "--curves", str(tmp_path / "curves.csv"), "--settings-json", json.dumps(settings),
                 "--student-depth", "6", "--teacher-depth", "8", "--out", str(out), "--json", str(js),
                 "--noise-floor", "0.1"])
    assert rc == 0
    md = out.read_text()
    assert "spectral_last" in md and "late" in md
    records = json.loads(js.read_text())
    by_id = {r["claim_id"]: r for r in records}
    assert by_id["C1"]["verdict"] == "holds" and by_id["C5"]["verdict"] == "holds"
    assert by_id["C8"]["verdict"] == "not testable"
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_per_image_correctness_goes_from_final_pt_to_claims_md(tmp_path):
    """The accuracy_tables command gathers each student's final.pt `val_correct` into one .npz, and the
    claims command tests two one-seed models on it (the rules' commands, without snakemake)."""
    import torch

    from distdyn import metrics

    runs = {"teacher": (90.0, None), "logit": (85.0, np.arange(20) < 17), "spectral_last": (80.0, np.arange(20) < 16)}
    logs, finals = [], []
    for name, (acc1, correct) in runs.items():
        d = tmp_path / name
        d.mkdir()
        (d / "log.jsonl").write_text(json.dumps({"epoch": 1, "test_acc1": acc1, "test_acc5": 99.0}) + "\n")
        ckpt = {"model": {}, "epoch": 1} | ({"val_correct": torch.from_numpy(correct)} if correct is not None else {})
        torch.save(ckpt, d / "final.pt")
        logs.append(str(d / "log.jsonl"))
        finals.append(str(d / "final.pt"))
    m = tmp_path / "metrics"
    assert metrics.main(["accuracy", "--logs", *logs, "--names", *runs, "--seeds", "0", "0", "0", "--roles",
                         "teacher", "student", "student", "--out", str(m / "accuracy.csv"), "--summary",
                         str(m / "summary.csv"), "--curves", str(m / "curves.csv"), "--finals", *finals,
                         "--correct", str(m / "correct.npz")]) == 0
    with np.load(m / "correct.npz") as f:
        assert sorted(f.files) == ["logit/seed_0", "spectral_last/seed_0"]
        assert f["logit/seed_0"].dtype == bool and f["logit/seed_0"].sum() == 17
    settings = {k: SETTINGS[k] for k in ("logit", "spectral_last")}
    teacher_layers([3.0, 1.0, 3.0]).to_csv(m / "layers.csv", index=False)
    assert C.main(["--layers", str(m / "layers.csv"), "--accuracy", str(m / "accuracy.csv"), "--curves",
                   str(m / "curves.csv"), "--settings-json", json.dumps(settings), "--student-depth", "6",
                   "--teacher-depth", "8", "--correct", str(m / "correct.npz"), "--out", str(tmp_path / "c.md"),
                   "--json", str(tmp_path / "c.json")]) == 0
    c5 = {r["claim_id"]: r for r in json.loads((tmp_path / "c.json").read_text())}["C5"]
    assert c5["comparisons"][0]["mcnemar"] == {"images": 20, "a_only": 0, "b_only": 1, "p": 1.0}
    assert "same 20 validation images" in (tmp_path / "c.md").read_text()


def test_a_damaged_correctness_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "results" / "metrics" / "val_correct.npz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 truncated")
    for name in ("layers", "accuracy", "curves"):
        (tmp_path / f"{name}.csv").write_text("role,setting\n")
    rc = C.main(["--layers", str(tmp_path / "layers.csv"), "--accuracy", str(tmp_path / "accuracy.csv"),
                 "--curves", str(tmp_path / "curves.csv"), "--settings-json", "{}", "--student-depth", "6",
                 "--teacher-depth", "8", "--correct", str(bad), "--out", str(tmp_path / "c.md")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "val_correct.npz: is not the per-image correctness .npz" in err[0] and "Traceback" not in err[0]


# ---------------------------------------------------------------- the data file, the one-seed reasons, the knobs


def test_the_data_files_statements_are_what_claims_md_shows():
    import yaml

    with open(Path(C.__file__).with_name("claims.yaml")) as f:
        data = yaml.safe_load(f)
    assert list(data) == list(C.TESTS)  # one entry per claim tested, in the report's order
    md = C.render_markdown(full_run(3), "Claims")
    for cid, d in data.items():
        assert f"| [{cid}](#{cid.lower()}) | {d['claim']} |" in md
        assert f"\n## {cid}\n\n**Claim.** {d['claim']}\n" in md
        assert f"\n**Paper.** {d['paper']}\n" in md


def test_one_seed_reasons_name_the_option_that_decides_them():
    one = full_run(1)
    reasons = {r["claim_id"]: r["reason"] for r in one}
    assert "state noise_floor to apply one" in reasons["C5"]
    assert "state entropy_noise_floor to apply one" in reasons["C12"]
    assert "state loss_ratio_floor to decide on the late/early ratio" in reasons["C11"]


def test_every_knob_of_the_cli_is_a_config_key_with_the_same_default():
    from distdyn.claims.cli import KNOBS
    from distdyn.schema import read_schema

    keys = read_schema()["properties"]["claims"]["properties"]
    thresholds = [flag[2:].replace("-", "_") for flag in KNOBS if flag != "--reference"]
    assert set(thresholds) == set(keys)
    defaults = C.Tolerances()
    assert {k: getattr(defaults, k) for k in keys} == {k: v["default"] for k, v in keys.items()}
    options = (ROOT / "workflow" / "rules" / "common.smk").read_text().split("def claims_options")[1]
    for key in keys:  # the rule passes each (claims_options)
        assert f'"--{key.replace("_", "-")}": c["{key}"]' in options


# ---------------------------------------------------------------- methods beyond the paper


def test_methods_beyond_the_paper_are_left_out_of_the_claims_and_get_their_own_section(tmp_path):
    """vitkd and a user's method (even one aligning the last block) are no late-aligned settings of C5, C11
    or C12; claims.md ends with a section putting each beside logit KD and spectral_last, with intervals,
    entropy profiles and CKA."""
    from distdyn.claims.beyond import beyond_section

    settings = {**SETTINGS, "vitkd": {"method": "vitkd", "pairs": [[0, 0], [1, 1], [5, 7]]},
                "mine": {"method": "mine.py:Mine", "pairs": [[5, 7]]}}
    finals = {"logit": [85.0, 85.5, 84.5], "spectral_last": [80.0, 80.5, 79.5], "projector_last": [80.0, 80.2, 79.8],
              "vitkd": [84.9, 85.6, 84.6], "mine": [70.0, 70.5, 69.5]}
    acc = accuracy(finals)
    layers = student_layers({n: [[2.0, 1.0, 0.5, 1.5, 2.0, 2.5]] * 3 for n in ("logit", "spectral_last", "vitkd")})
    claims = run(layers, acc, settings=settings)
    for cid in ("C5", "C11", "C12"):
        assert not {"vitkd", "mine"} & set(claims[cid]["settings_used"]), cid
    assert claims["C5"]["settings_used"] == ["logit", "spectral_last", "projector_last"]
    cka = pd.DataFrame([{"model": f"{n}/seed_{s}/final", "role": "student", "setting": n, "seed": s, "epoch": 8,
                         "checkpoint": "final", "student_layer": i, "teacher_layer": j,
                         "cka": 0.9 if (i, j) == (6, 7) else 0.1 * (n == "vitkd") + 0.2}
                        for n in ("logit", "spectral_last", "vitkd") for s in range(3)
                        for i in range(1, S_DEPTH + 1) for j in range(1, T_DEPTH + 1)])
    md = beyond_section(layers, acc, settings, S_DEPTH, T_DEPTH, cka=cka)
    vitkd = md[md.index("### vitkd"):md.index("### mine")]
    assert "final top-1 85.03 (mean of 3 seeds" in vitkd
    assert re.search(r"vs logit KD logit \(logit\) \(top-1 85\.00\): \+0\.03 pts \(3 vs 3 seeds; paired t \(same "
                     r"seeds\) 95% CI \[-\d\.\d\d, \+\d\.\d\d\], df [\d.]+; P\(A>B\) .*\) -> inconclusive "
                     r"\(overlapping intervals\)", vitkd)
    assert re.search(r"vs late mimicry spectral_last .*: \+5\.03 pts .* -> higher", vitkd)
    assert "projector_last" not in vitkd  # late mimicry is the spectral late setting
    assert "- vitkd: final entropy profile min 0.500 bits at L3, L3, L3" in vitkd
    assert "CKA first<->first 0.300, last<->last 0.300, last student block's best teacher block L7" in vitkd
    assert re.search(r"### mine \(mine\.py:Mine.*\n\n.*\n- vs logit KD .* -> lower", md)
    assert beyond_section(layers, acc, SETTINGS, S_DEPTH, T_DEPTH) is None
    for name, df in (("layers", layers), ("accuracy", acc), ("curves", curves({n: [(80.0, 80.0)] * 3 for n in finals})),
                     ("cka", cka)):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "claims.md"
    assert C.main(["--layers", str(tmp_path / "layers.csv"), "--accuracy", str(tmp_path / "accuracy.csv"),
                   "--curves", str(tmp_path / "curves.csv"), "--cka", str(tmp_path / "cka.csv"),
                   "--settings-json", json.dumps(settings), "--student-depth", "6", "--teacher-depth", "8",
                   "--out", str(out)]) == 0
    assert out.read_text().rstrip().endswith(md.rstrip())
