"""The calibration report of one workflow version: everything the page and its CSV show,
computed once from the labelled drafts (calibration/maths.py does the maths)."""
from __future__ import annotations

from dataclasses import dataclass

from workflows.models import WorkflowVersion
from workflows.selectors import daily_volume

from . import maths
from .selectors import LabelledDrafts, labelled_drafts, lane_mix

# Thresholds the what-if table always shows beside the recommended and the current one.
WHAT_IF_GRID = (0.70, 0.80, 0.85, 0.90, 0.95, 0.98)


@dataclass
class Report:
    version: WorkflowVersion
    labelled: LabelledDrafts
    alpha: float
    confidence: float
    auto_approve_at: float
    block_below: float
    daily_volume: float
    recommendation: maths.Recommendation
    bins: list[maths.Bin]
    ece: float | None
    auroc: float | None
    curve: list[maths.Point]
    current: maths.Point | None
    what_if: list[maths.WhatIf]
    lane_mix: list[dict]

    @property
    def table_points(self) -> list[maths.Point]:
        """The curve's numbers for the table under the chart: about twenty rows."""
        return maths.thin(self.curve, 21)

    def chart_data(self) -> dict:
        """What the charts draw (json_script on the page, read by static/js/calibration.js)."""
        return {
            "reliability": [
                {"low": b.low, "high": b.high, "count": b.count, "mean_score": b.mean_score, "good_rate": b.good_rate}
                for b in self.bins
            ],
            "curve": [{"threshold": p.threshold, "coverage": p.coverage, "risk": p.risk, "risk_upper": p.risk_upper}
                      for p in maths.thin(self.curve)],
            "lane_mix": self.lane_mix,
            "alpha": self.alpha,
            "recommended": self.recommendation.threshold,
            "current": self.auto_approve_at,
        }


def _point_at(curve: list[maths.Point], threshold: float) -> maths.Point | None:
    at = [p for p in curve if p.threshold >= threshold]
    return at[-1] if at else None


def build(version: WorkflowVersion, *, alpha: float, confidence: float = maths.DEFAULT_CONFIDENCE) -> Report:
    data = labelled_drafts(version)
    routing = version.spec.routing
    curve = maths.risk_coverage(data.scores, data.bad, confidence, data.weights)
    rec = maths.recommend_threshold(data.scores, data.bad, alpha, confidence, data.weights)
    volume = daily_volume(version.workflow)
    grid = sorted({*WHAT_IF_GRID, routing.auto_approve_at, *([rec.threshold] if rec.threshold is not None else [])},
                  reverse=True)
    return Report(
        version=version, labelled=data, alpha=alpha, confidence=confidence,
        auto_approve_at=routing.auto_approve_at, block_below=routing.block_below, daily_volume=volume,
        recommendation=rec, bins=maths.reliability(data.scores, data.bad),
        ece=maths.expected_calibration_error(data.scores, data.bad) if data.count else None,
        auroc=maths.auroc(data.scores, data.bad),
        curve=curve, current=_point_at(curve, routing.auto_approve_at),
        what_if=maths.what_if(curve, volume, grid),
        lane_mix=lane_mix(version.workflow),
    )
