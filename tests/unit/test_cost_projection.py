"""The projection and the escape-rate bound, against hand-computed cases (pure: no database)."""
import math

import pytest

from costs.projection import EXACT_LIMIT, Z95, project, remaining_sum


def test_projection_matches_a_hand_computed_case():
    # Half the submissions cost 1 cent, half 3 cents (a cascade). 4 a day, 25 days left:
    # n = 100 more submissions. The rest of the month costs 0.01 * 100 + 0.02 * K with
    # K ~ Binomial(100, 1/2): median K = 50 -> 2.00 USD; 95th percentile K = 58 -> 2.16 USD
    # (P(K <= 57) = 0.933, P(K <= 58) = 0.956). Expected: 100 * 0.02 = 2.00 USD.
    costs = [0.01, 0.03] * 50
    p = project(costs, month_to_date=5.0, daily_submissions=4, remaining_days=25, seed=1)
    assert p.sample_size == 100
    assert p.at_rate.expected == pytest.approx(7.00)
    assert p.at_rate.p50 == pytest.approx(7.00, abs=0.021)
    assert p.at_rate.p95 == pytest.approx(7.16, abs=0.021)
    # 10x: n = 1000, K ~ Binomial(1000, 1/2): median 500 -> 20.00; p95 = 500 + 1.645 * sqrt(250) = 526
    # -> 10 + 0.02 * 526 = 20.52 USD.
    assert p.at_10x.expected == pytest.approx(25.00)
    assert p.at_10x.p50 == pytest.approx(25.00, abs=0.05)
    assert p.at_10x.p95 == pytest.approx(25.52, abs=0.05)


def test_the_tail_is_not_an_average_times_a_count():
    # One draft in ten cascades to a model that costs 50x: the mean hides it, the p95 does not.
    costs = [0.01] * 9 + [0.50]
    p = project(costs, month_to_date=0, daily_submissions=1, remaining_days=20, seed=3)
    mean_times_count = 20 * sum(costs) / len(costs)
    assert p.at_rate.expected == pytest.approx(mean_times_count)
    assert p.at_rate.p95 > 1.5 * mean_times_count


def test_a_constant_cost_projects_exactly():
    p = project([0.02] * 7, month_to_date=1.0, daily_submissions=3, remaining_days=10)
    assert p.at_rate.p50 == p.at_rate.p95 == pytest.approx(1.60)
    assert p.at_10x.p95 == pytest.approx(7.00)


def test_large_volumes_use_the_normal_approximation_of_the_same_distribution():
    costs = [0.01, 0.03]
    n = EXACT_LIMIT + 1000
    p50, p95 = remaining_sum(costs, n)
    assert p50 == pytest.approx(n * 0.02)
    assert p95 == pytest.approx(n * 0.02 + Z95 * math.sqrt(n) * 0.01)


def test_nothing_to_project():
    p = project([], month_to_date=2.5, daily_submissions=0, remaining_days=10)
    assert (p.at_rate.p50, p.at_rate.p95, p.at_10x.p95) == (2.5, 2.5, 2.5)


