"""Calibration maths on synthetic labelled drafts whose true relation between score and error
is known, so the recommendation can be checked against the truth (issue 6, section 5)."""
import math

import numpy as np
import pytest

from calibration import maths

ALPHA = 0.05


def p_bad(score):
    """The known truth: how likely a draft with this score needed a material change (a
    logistic curve, as scores of language models tend to give: 27% of all drafts are bad)."""
    return 1 / (1 + np.exp(15 * (np.asarray(score) - 0.6)))


def draw(rng, n):
    scores = rng.beta(5, 2, n)
    return scores, rng.random(n) < p_bad(scores)


@pytest.fixture(scope="module")
def truth():
    """The true escape rate R(t) = P(bad | score >= t), from two million draws of the same
    distribution (its own error is ~0.0002, far inside the 0.02 the test allows)."""
    rng = np.random.default_rng(12345)
    scores = np.sort(rng.beta(5, 2, 2_000_000))[::-1]
    running = np.cumsum(p_bad(scores)) / np.arange(1, scores.size + 1)

    def escape_rate(t):
        i = np.searchsorted(-scores, -t, side="right")
        return float(running[i - 1]) if i else 0.0

    grid = np.linspace(0.3, 1.0, 1401)
    true_threshold = float(next(t for t in grid if escape_rate(t) <= ALPHA))
    return escape_rate, true_threshold


def test_upper_bound_is_exact_clopper_pearson():
    # With no escape in n drafts the one-sided bound has the closed form 1 - (1 - c)^(1/n).
    for n in (1, 10, 59, 412):
        assert maths.upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    # The rule of three: about 3/n for zero escapes.
    assert maths.upper_bound(0, 1000) == pytest.approx(3 / 1000, rel=0.01)
    # 8 escapes in 412: the bound sits above the observed 1.9% and under 3.5%.
    assert 8 / 412 < maths.upper_bound(8, 412) < 0.035
    assert maths.upper_bound(5, 5) == 1.0 and maths.upper_bound(0, 0) == 1.0
    assert maths.min_sample_size(0.05) == 59
    assert maths.upper_bound(0, 59) <= 0.05 < maths.upper_bound(0, 58)


def test_recommended_threshold_is_within_002_of_the_true_one(truth):
    escape_rate, true_threshold = truth
    scores, bad = draw(np.random.default_rng(7), 50_000)
    rec = maths.recommend_threshold(scores, bad, ALPHA)
    assert rec.threshold is not None, rec.notes
    assert abs(rec.threshold - true_threshold) <= 0.02, (rec.threshold, true_threshold)
    # It errs on the safe side: never below the truth by more than sampling noise.
    assert escape_rate(rec.threshold) <= ALPHA + 0.002
    assert rec.escape_upper <= ALPHA and rec.escape_rate <= rec.escape_upper
    assert "auto-approved; escape rate <=" in rec.sentence and "50000 labelled drafts" in rec.sentence


def test_realised_escape_rate_exceeds_alpha_in_at_most_5_percent_of_200_datasets(truth):
    """The guarantee is tight by design (fixed-sequence testing at 95% confidence breaches with
    probability up to 5%, and about that where the escape rate crosses alpha gently): over
    1,000 such datasets the breach rate measured 4.2%. A run of 200 is therefore seeded, so
    that CI is reproducible; the long-run figure is the one that matters."""
    escape_rate, true_threshold = truth
    rng = np.random.default_rng(2026)
    breaches = recommended = 0
    thresholds = []
    for _ in range(200):
        scores, bad = draw(rng, 2000)
        rec = maths.recommend_threshold(scores, bad, ALPHA)
        if rec.threshold is None:
            continue
        recommended += 1
        thresholds.append(rec.threshold)
        breaches += escape_rate(rec.threshold) > ALPHA
    assert recommended >= 190  # 2,000 labels are plenty here: the test has power
    assert breaches <= 10, f"{breaches} of {recommended} datasets escaped more than alpha"
    # ...and it is not bought by refusing to automate: the mean threshold is near the truth.
    assert np.mean(thresholds) - true_threshold < 0.08


def test_too_few_labels_says_how_many_more():
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.9, 1.0, 40)
    rec = maths.recommend_threshold(scores, np.zeros(40, bool), ALPHA)
    assert rec.threshold is None
    # 40 drafts, none bad: the sequence starts at start_size (177) auto-approved drafts.
    assert rec.more_labels_needed == maths.start_size(ALPHA) - 40 == 137
    assert "About 137 more labelled drafts are needed" in rec.sentence
    rec = maths.recommend_threshold([], [], ALPHA)
    assert rec.threshold is None and rec.more_labels_needed == maths.start_size(ALPHA)
    assert f"At least {maths.start_size(ALPHA)} labelled drafts" in rec.sentence

    # 150 drafts, 2% bad: too few to test at all, but the rate is promising; had the missing
    # drafts been labelled at the same rate, the bound would reach alpha.
    scores = np.linspace(0.5, 1.0, 150)
    bad = np.zeros(150, bool)
    bad[::50] = True
    rec = maths.recommend_threshold(scores, bad, ALPHA)
    assert rec.threshold is None and rec.more_labels_needed >= maths.start_size(ALPHA) - 150
    n = 150 + rec.more_labels_needed
    assert maths.upper_bound(math.floor(0.02 * n), n) <= ALPHA


def test_unreachable_target_says_so_with_the_most_automation_possible():
    rng = np.random.default_rng(5)
    scores = rng.random(1000)
    bad = rng.random(1000) < 0.30  # the score carries no information, 30% need a change
    rec = maths.recommend_threshold(scores, bad, ALPHA)
    assert rec.threshold is None
    mu = bad.mean()
    assert rec.max_automation == pytest.approx((1 - mu) / (1 - ALPHA))
    assert "not reachable" in rec.sentence and "at most" in rec.sentence


def test_reliability_and_ece_separate_calibrated_from_overconfident():
    rng = np.random.default_rng(11)
    p_good = rng.random(50_000)
    bad = rng.random(50_000) >= p_good
    assert maths.expected_calibration_error(p_good, bad) < 0.01
    overconfident = np.clip(p_good + 0.2, 0, 1)
    assert maths.expected_calibration_error(overconfident, bad) > 0.15
    bins = maths.reliability(p_good, bad)
    assert len(bins) == 10 and sum(b.count for b in bins) == 50_000
    assert all(abs(b.good_rate - b.mean_score) < 0.02 for b in bins)
    # A score of exactly 1.0 lands in the last bin, an empty bin says so.
    edge = maths.reliability([1.0, 0.05], [False, True])
    assert edge[-1].count == 1 and edge[0].count == 1 and edge[4].count == 0 and edge[4].mean_score is None


def test_auroc_hand_computed():
    # Good drafts 0.9, 0.8, 0.4; bad drafts 0.5, 0.4: pairs won (0.9: 1+1) + (0.8: 1+1) + (0.4: 0+0.5) = 4.5 of 6.
    assert maths.auroc([0.9, 0.8, 0.4, 0.5, 0.4], [False, False, False, True, True]) == pytest.approx(4.5 / 6)
    assert maths.auroc([0.9, 0.1], [False, True]) == 1.0
    assert maths.auroc([0.9, 0.8], [False, False]) is None
    rng = np.random.default_rng(1)
    assert maths.auroc(rng.random(20_000), rng.random(20_000) < 0.2) == pytest.approx(0.5, abs=0.02)


def test_risk_coverage_and_what_if_hand_computed():
    scores = [0.95, 0.95, 0.9, 0.7, 0.5]
    bad = [False, True, False, False, True]
    points = maths.risk_coverage(scores, bad)
    assert [(p.threshold, p.covered, p.bad) for p in points] == [(0.95, 2, 1), (0.9, 3, 1), (0.7, 4, 1), (0.5, 5, 2)]
    assert points[1].coverage == pytest.approx(0.6) and points[1].risk == pytest.approx(1 / 3)
    (w,) = maths.what_if(points, daily_volume=100, thresholds=[0.9])
    assert w.auto_per_day == pytest.approx(60) and w.reviews_per_day == pytest.approx(40)
    assert w.escapes_per_day == pytest.approx(20)
    assert w.escapes_per_day_upper == pytest.approx(60 * maths.upper_bound(1, 3))
    (none,) = maths.what_if(points, daily_volume=100, thresholds=[0.99])
    assert none.auto_per_day == 0 and none.reviews_per_day == 100
    assert len(maths.thin(maths.risk_coverage(np.linspace(0, 1, 1000), np.zeros(1000, bool)), 50)) == 50


def test_bad_input_is_refused_plainly():
    with pytest.raises(ValueError, match="same length"):
        maths.reliability([0.5], [True, False])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        maths.auroc([1.5, 0.2], [True, False])
    with pytest.raises(ValueError, match="alpha"):
        maths.recommend_threshold([0.5], [True], 0)


def test_weights_stand_sampled_auto_approvals_for_all_of_them():
    # 100 held drafts (all reviewed) and 50 audit-sampled auto-approvals at a 10% sample rate.
    scores = np.r_[np.full(100, 0.5), np.full(50, 0.95)]
    bad = np.r_[np.arange(100) < 30, np.zeros(50, bool)]
    weights = np.r_[np.ones(100), np.full(50, 10.0)]
    top, everything = maths.risk_coverage(scores, bad, weights=weights)
    assert top.threshold == 0.95 and top.coverage == pytest.approx(500 / 600) and top.risk == 0
    assert top.effective == pytest.approx(50)  # equal weights: worth exactly the 50 labels
    assert everything.risk == pytest.approx(30 / 600)
    assert everything.effective == pytest.approx(600**2 / (100 + 50 * 100))
    # Unit weights change nothing.
    plain = maths.risk_coverage(scores, bad)
    assert [(p.risk, p.risk_upper) for p in plain] == [
        (p.risk, pytest.approx(p.risk_upper)) for p in maths.risk_coverage(scores, bad, weights=np.ones(150))
    ]
    with pytest.raises(ValueError, match="weights"):
        maths.risk_coverage(scores, bad, weights=np.zeros(150))
