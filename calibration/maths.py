"""Calibration maths over labelled drafts: pure functions of (scores, needed-a-material-change).

A labelled draft is a score in [0, 1] (the pipeline's confidence that the draft can go out as
it is) and a boolean `bad`: a reviewer changed it materially or rejected it (workflows/labels.py
says which decisions count). Everything here is computed from those two arrays, so it is tested
on synthetic data with a known truth, without PostgreSQL.

The threshold recommendation answers the admin's question "how much can skip a human while at
most a share alpha of what skips would have been changed materially?". The escape rate at a
threshold t is the share of bad drafts among those scoring >= t. Each threshold is a hypothesis
test: its one-sided Clopper-Pearson upper bound on that share must be <= alpha. Picking the
lowest threshold that passes would test many thresholds and keep the luckiest one, so the
thresholds are tested in a fixed order instead, from the most confident down, stopping at the
first that fails (fixed-sequence testing, as in Angelopoulos et al., "Learn then Test", 2021):
the chance that the recommended threshold's true escape rate exceeds alpha stays at most
1 - confidence without any correction for the number of thresholds tried. The sequence starts
where the auto-approved set is large enough for the test to have power (`start_size`);
thresholds above it are never recommended (they would automate almost nothing anyway).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta, mannwhitneyu

DEFAULT_CONFIDENCE = 0.95


def _arrays(scores, bad) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    b = np.asarray(bad, dtype=bool)
    if s.shape != b.shape or s.ndim != 1:
        raise ValueError("scores and labels must be two sequences of the same length")
    if s.size and (np.isnan(s).any() or s.min() < 0 or s.max() > 1):
        raise ValueError("scores must lie in [0, 1]")
    return s, b


def upper_bound(bad_count: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate after `bad_count` of `n` were bad.

    Exact (from the beta distribution), so it holds at any sample size, unlike the normal
    approximation, which is too optimistic exactly where it matters: few escapes in few drafts.
    """
    if n <= 0:
        return 1.0
    if bad_count >= n:
        return 1.0
    return float(beta.ppf(confidence, bad_count + 1, n - bad_count))


def min_sample_size(alpha: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Fewest auto-approved drafts for which even zero escapes can show a rate <= alpha."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - alpha))


def start_size(alpha: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Where the fixed sequence starts: three times the bare minimum, so that one unlucky bad
    draft among the most confident few does not end the sequence before it begins (simulated
    in tests/unit/test_calibration_maths.py: power without losing the guarantee)."""
    return 3 * min_sample_size(alpha, confidence)


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    mean_score: float | None
    good_rate: float | None


def reliability(scores, bad, bins: int = 10) -> list[Bin]:
    """Equal-width score bins: the mean score against the share of drafts that were fine."""
    s, b = _arrays(scores, bad)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds scores in [edge_i, edge_i+1); a score of exactly 1.0 goes into the last bin.
    index = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        out.append(Bin(
            low=float(edges[i]), high=float(edges[i + 1]), count=count,
            mean_score=float(s[members].mean()) if count else None,
            good_rate=float(1 - b[members].mean()) if count else None,
        ))
    return out


def expected_calibration_error(scores, bad, bins: int = 10) -> float | None:
    """ECE: the count-weighted mean gap between a bin's mean score and its share of fine drafts."""
    s, _ = _arrays(scores, bad)
    if not s.size:
        return None
    return float(sum(
        x.count / s.size * abs(x.good_rate - x.mean_score) for x in reliability(scores, bad, bins) if x.count
    ))


def auroc(scores, bad) -> float | None:
    """How well the score ranks drafts that needed a material change below those that did not:
    the chance that a random fine draft outscores a random bad one (ties count half). 0.5 is a
    coin; None when one of the two kinds is missing."""
    s, b = _arrays(scores, bad)
    good, worse = s[~b], s[b]
    if not good.size or not worse.size:
        return None
    return float(mannwhitneyu(good, worse).statistic / (good.size * worse.size))


@dataclass(frozen=True)
class Point:
    """Auto-approving every draft scoring >= threshold: the share that skips a human
    (coverage), and among them the observed share of bad drafts (risk) and its upper bound.
    `covered` counts labelled drafts; `effective` is what they are worth as a sample once
    weighted (equal to `covered` without weights)."""
    threshold: float
    covered: int
    bad: int
    coverage: float
    risk: float
    risk_upper: float
    effective: float = 0.0


def risk_coverage(scores, bad, confidence: float = DEFAULT_CONFIDENCE, weights=None) -> list[Point]:
    """One point per distinct score, from the most confident draft down.

    `weights` corrects for how the labels were drawn: in production every held draft is
    reviewed but only a random sample of auto-approved ones (the audit sample), so each sampled
    auto-approval stands for 1/rate drafts. Weighted, the rate is the weighted share and the
    bound uses Kish's effective sample size n_eff = (sum w)^2 / sum w^2 (an approximation: the
    exact bound holds for unweighted labels).
    """
    s, b = _arrays(scores, bad)
    if not s.size:
        return []
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != s.shape or (w <= 0).any():
        raise ValueError("weights must be positive, one per score")
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    covered = np.arange(1, s.size + 1)
    bad_so_far = np.cumsum(b[order])
    weight = np.cumsum(w[order])
    bad_weight = np.cumsum((w * b)[order])
    square = np.cumsum((w * w)[order])
    # Only the last of equal scores is a threshold: a threshold takes all of them or none.
    last = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    n, k = covered[last], bad_so_far[last]
    risk = bad_weight[last] / weight[last]
    n_eff = weight[last] ** 2 / square[last]
    k_eff = risk * n_eff
    # The bounds of every threshold at once (one vectorised call instead of one per point).
    upper = np.where(k_eff >= n_eff, 1.0, beta.ppf(confidence, k_eff + 1, np.maximum(n_eff - k_eff, 1e-9)))
    coverage = weight[last] / weight[-1]
    return [
        Point(threshold=float(t), covered=int(ni), bad=int(ki), coverage=float(c), risk=float(r),
              risk_upper=float(u), effective=float(e))
        for t, ni, ki, c, r, u, e in zip(sorted_scores[last], n, k, coverage, risk, upper, n_eff)
    ]


def thin(points: list[Point], most: int = 200) -> list[Point]:
    """At most `most` points for a chart, evenly spread over coverage, the ends kept."""
    if len(points) <= most:
        return points
    step = (len(points) - 1) / (most - 1)
    return [points[round(i * step)] for i in range(most)]


@dataclass(frozen=True)
class Recommendation:
    alpha: float
    confidence: float
    labelled: int
    base_error_rate: float | None
    threshold: float | None = None
    coverage: float | None = None
    escape_rate: float | None = None     # observed, among the drafts the threshold auto-approves
    escape_upper: float | None = None    # its Clopper-Pearson upper bound
    more_labels_needed: int | None = None
    max_automation: float | None = None  # (1 - mu) / (1 - alpha): the most any score could automate
    notes: list[str] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        if self.threshold is None:
            return " ".join(self.notes) or "No threshold can be recommended yet."
        return (
            f"at {self.threshold:.2f}: {self.coverage:.0%} auto-approved; escape rate <= "
            f"{self.escape_upper:.1%} with {self.confidence:.0%} confidence on {self.labelled} labelled drafts"
        )


def _labels_to_certify(rate: float, alpha: float, confidence: float) -> int | None:
    """Auto-approved drafts needed for the bound to reach alpha if the observed rate held."""
    if rate >= alpha:
        return None
    n = min_sample_size(alpha, confidence)
    while upper_bound(math.floor(rate * n), n, confidence) > alpha:
        n = math.ceil(n * 1.1)
        if n > 10_000_000:
            return None
    return n


def recommend_threshold(scores, bad, alpha: float, confidence: float = DEFAULT_CONFIDENCE,
                        weights=None) -> Recommendation:
    """The lowest threshold that passes the fixed-sequence test (module docstring), with the
    coverage it gives; otherwise why not and how many more labels would settle it."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if not 0.5 <= confidence < 1:
        raise ValueError("confidence must be at least 0.5 and below 1")
    s, b = _arrays(scores, bad)
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=float)
    mu = float((w * b).sum() / w.sum()) if s.size else None
    common = {"alpha": alpha, "confidence": confidence, "labelled": int(s.size), "base_error_rate": mu}
    if mu is not None:
        common["max_automation"] = 1.0 if mu <= alpha else (1 - mu) / (1 - alpha)
    points = risk_coverage(s, b, confidence, weights)
    first = start_size(alpha, confidence)
    chosen = None
    for point in points:
        if point.effective < first:
            continue
        if point.risk_upper > alpha:
            break
        chosen = point
    if chosen is not None:
        return Recommendation(**common, threshold=chosen.threshold, coverage=chosen.coverage,
                              escape_rate=chosen.risk, escape_upper=chosen.risk_upper)
    notes = []
    if mu is not None and mu > alpha:
        notes.append(
            f"{mu:.0%} of labelled drafts needed a material change; even a perfect score could "
            f"auto-approve at most {common['max_automation']:.0%} at an escape rate of {alpha:.1%}."
        )
    # The most promising point to certify: the largest coverage whose observed risk is at most
    # half of alpha (a rate at alpha itself could never be certified).
    hopeful = [p for p in points if p.effective >= min(first, s.size) - 1e-9 and p.risk <= alpha / 2]
    needed = None
    if hopeful:
        best = hopeful[-1]
        per_auto = _labels_to_certify(best.risk, alpha, confidence)
        if per_auto is not None:
            needed = max(0, math.ceil(max(per_auto, first) / best.coverage) - int(s.size))
            notes.append(
                f"About {needed} more labelled drafts are needed to certify a threshold near "
                f"{best.threshold:.2f} (observed escape rate {best.risk:.1%} there)."
            )
    elif s.size < first:
        needed = first - int(s.size)
        notes.append(f"At least {first} labelled drafts are needed before any threshold can be tested "
                     f"({needed} more).")
    if not hopeful and s.size >= first:
        notes.append(
            f"No score level keeps the observed escape rate under {alpha / 2:.1%}: the target "
            f"{alpha:.1%} is not reachable with this score; keep reviewing, or improve the workflow."
        )
    return Recommendation(**common, more_labels_needed=needed, notes=notes)


@dataclass(frozen=True)
class WhatIf:
    threshold: float
    auto_per_day: float
    reviews_per_day: float
    escapes_per_day: float        # expected, from the observed escape rate
    escapes_per_day_upper: float  # from its upper bound


def what_if(points: list[Point], daily_volume: float, thresholds) -> list[WhatIf]:
    """Reviews per day against expected escapes per day at today's volume, per threshold."""
    out = []
    for t in thresholds:
        at = [p for p in points if p.threshold >= t]
        point = at[-1] if at else None
        coverage = point.coverage if point else 0.0
        auto = daily_volume * coverage
        out.append(WhatIf(
            threshold=float(t), auto_per_day=auto, reviews_per_day=daily_volume - auto,
            escapes_per_day=auto * (point.risk if point else 0.0),
            escapes_per_day_upper=auto * (point.risk_upper if point else 0.0),
        ))
    return out
