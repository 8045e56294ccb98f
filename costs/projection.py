"""This month's spend projected from each workflow's actual per-submission costs. Pure.

The spread matters more than the middle: a workflow whose drafts usually cost a cent but
sometimes cascade to a large model and a QA call has a long tail that "average x count" hides.
So the rest of the month is the sum of ``n`` submissions drawn (bootstrap, with replacement)
from the costs of the workflow's real submissions, repeated ``draws`` times; the page shows the
median and the 95th percentile of those sums, at today's rate and at 10x the volume.

For large ``n`` (over ``EXACT_LIMIT`` submissions) the draws would cost memory and time for no
gain: by the central limit theorem the sum of ``n`` independent draws is normal with mean
``n * mean`` and standard deviation ``sqrt(n) * sd`` of the same empirical distribution, which
is what is used there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_LIMIT = 2000
DRAWS = 2000
Z95 = 1.6448536269514722  # one-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class SpendRange:
    expected: float  # month to date + n * mean
    p50: float
    p95: float


@dataclass(frozen=True)
class Projection:
    month_to_date: float
    daily_submissions: float
    remaining_days: float
    sample_size: int  # submissions the distribution comes from
    at_rate: SpendRange
    at_10x: SpendRange


def remaining_sum(costs: list[float], n: int, *, draws: int = DRAWS, seed: int = 0) -> tuple[float, float]:
    """(median, 95th percentile) of the total cost of ``n`` more submissions."""
    if n <= 0 or not costs:
        return 0.0, 0.0
    values = np.asarray(costs, dtype=float)
    if n > EXACT_LIMIT:
        mean, sd = float(values.mean()), float(values.std())
        return n * mean, n * mean + Z95 * math.sqrt(n) * sd
    rng = np.random.default_rng(seed)
    totals = np.empty(draws)
    # In chunks, so memory stays at a few MB whatever n is.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, draws, chunk):
        rows = min(chunk, draws - start)
        totals[start:start + rows] = rng.choice(values, size=(rows, n), replace=True).sum(axis=1)
    return float(np.percentile(totals, 50)), float(np.percentile(totals, 95))


def project(costs: list[float], *, month_to_date: float, daily_submissions: float, remaining_days: float,
            draws: int = DRAWS, seed: int = 0) -> Projection:
    """``costs``: the cost of each recent submission (every call of it); ``daily_submissions``:
    today's rate; ``remaining_days``: what is left of the month, in days (fractional)."""
    mean = float(np.mean(costs)) if costs else 0.0

    def at(multiplier: int) -> SpendRange:
        n = round(daily_submissions * multiplier * remaining_days)
        p50, p95 = remaining_sum(costs, n, draws=draws, seed=seed)
        return SpendRange(expected=month_to_date + n * mean, p50=month_to_date + p50, p95=month_to_date + p95)

    return Projection(month_to_date=month_to_date, daily_submissions=daily_submissions,
                      remaining_days=remaining_days, sample_size=len(costs), at_rate=at(1), at_10x=at(10))
