"""What an eval run says, computed from its stored case results (the page, run_eval and the
comparison of two versions all read it from here)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from workflows.selectors import daily_volume

from .models import CaseResult, EvalRun


@dataclass(frozen=True)
class Summary:
    cases: int
    passed: int
    pass_rate: float | None
    schema_valid_rate: float | None
    mean_score: float | None
    lane_mix: dict[str, int]
    cost_per_case: Decimal
    monthly_cost: Decimal  # at the workflow's volume of the last 30 days
    monthly_cost_10x: Decimal
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    daily_volume: float


def summarise(run: EvalRun) -> Summary:
    rows = list(run.results.values_list("passed", "schema_valid", "score", "lane", "cost_usd", "latency_ms"))
    n = len(rows)
    scores = [r[2] for r in rows if r[2] is not None]
    latencies = np.array([r[5] for r in rows], dtype=float)
    cost = sum((r[4] for r in rows), Decimal(0))
    per_case = (cost / n) if n else Decimal(0)
    volume = daily_volume(run.version.workflow)
    monthly = (per_case * Decimal(str(round(volume * 30, 6)))).quantize(Decimal("0.01"))
    return Summary(
        cases=n, passed=sum(1 for r in rows if r[0]), pass_rate=(sum(1 for r in rows if r[0]) / n) if n else None,
        schema_valid_rate=(sum(1 for r in rows if r[1]) / n) if n else None,
        mean_score=float(np.mean(scores)) if scores else None,
        lane_mix=dict(Counter(r[3] or "no draft" for r in rows)),
        cost_per_case=per_case.quantize(Decimal("0.00000001")), monthly_cost=monthly, monthly_cost_10x=monthly * 10,
        latency_p50_ms=float(np.percentile(latencies, 50)) if n else None,
        latency_p95_ms=float(np.percentile(latencies, 95)) if n else None,
        daily_volume=volume,
    )


@dataclass(frozen=True)
class CaseChange:
    key: str
    kind: str  # "regression", "fixed", "still failing", "still passing", "new", "dropped"
    before: CaseResult | None
    after: CaseResult | None


ORDER = ("regression", "new failure", "still failing", "fixed", "new pass", "still passing", "dropped")


def compare(before: EvalRun, after: EvalRun) -> list[CaseChange]:
    """Two runs case by case, regressions first."""
    a = {r.case.key: r for r in before.results.select_related("case")}
    b = {r.case.key: r for r in after.results.select_related("case")}
    changes = []
    for key in a.keys() | b.keys():
        old, new = a.get(key), b.get(key)
        if new is None:
            kind = "dropped"
        elif old is None:
            kind = "new pass" if new.passed else "new failure"
        elif old.passed and not new.passed:
            kind = "regression"
        elif not old.passed and new.passed:
            kind = "fixed"
        else:
            kind = "still passing" if new.passed else "still failing"
        changes.append(CaseChange(key, kind, old, new))
    return sorted(changes, key=lambda c: (ORDER.index(c.kind), c.key))
