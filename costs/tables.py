"""The tables behind every chart and list of the cost pages, built once from the selectors and
rendered three ways: as an HTML table, as a chart (its JSON) and as a CSV download."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from . import selectors


@dataclass
class Table:
    name: str  # the CSV file name and the id of the chart's JSON
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    chart: dict | None = None  # {"type": "bar", "labels": [...], "datasets": [{"label", "data"}], "stacked": bool}


def _num(value, places: int = 6):
    if value is None:
        return None
    return round(float(value), places) if isinstance(value, (Decimal, float)) else value


def _pivot(rows: list[dict], *, key: str, series: str, value: str) -> tuple[list, list[dict]]:
    """Rows of (key, series, value) as chart labels and one dataset per series."""
    labels = sorted({r[key] for r in rows})
    names = sorted({r[series] for r in rows})
    cells = {(r[key], r[series]): r[value] for r in rows}
    datasets = [{"label": str(n), "data": [_num(cells.get((k, n)) or 0) for k in labels]} for n in names]
    return [str(k) for k in labels], datasets


def cost_by_day(user, since: datetime) -> Table:
    rows = selectors.cost_by_day(user, since)
    labels, datasets = _pivot(rows, key="day", series="workflow", value="cost")
    return Table("cost-by-day", "Cost per day (USD), by workflow", ["Day", "Workflow", "Calls", "Cost (USD)"],
                 [[str(r["day"]), r["workflow"], r["calls"], _num(r["cost"])] for r in rows],
                 {"type": "bar", "labels": labels, "datasets": datasets, "stacked": True})


def cost_by_model(user, since: datetime) -> Table:
    rows = selectors.cost_by_model(user, since)
    return Table(
        "cost-by-model", "Cost per model",
        ["Model", "Calls", "Failed calls", "Input tokens", "Output tokens", "Cached input tokens", "Cost (USD)"],
        [[r["model"], r["calls"], r["failed"], r["prompt_tokens"], r["completion_tokens"], r["cached_tokens"],
          _num(r["cost"])] for r in rows],
        {"type": "bar", "labels": [r["model"] for r in rows],
         "datasets": [{"label": "Cost (USD)", "data": [_num(r["cost"]) for r in rows]}]},
    )


def cost_by_workflow(user, since: datetime) -> Table:
    rows = selectors.cost_by_workflow(user, since)
    return Table(
        "cost-by-workflow", "Cost per workflow",
        ["Workflow", "Submissions", "Calls", "Failed calls", "Cache hits", "Cache savings (USD, est.)",
         "Approved outputs", "Cost per approved output (USD)", "Cost (USD)"],
        [[r["workflow"], r["submissions"], r["calls"], r["failed"], r["cache_hits"], _num(r["cache_savings"]),
          r["approved"], _num(r["cost_per_approved"]), _num(r["cost"])] for r in rows],
        {"type": "bar", "labels": [r["workflow"] for r in rows],
         "datasets": [{"label": "Cost (USD)", "data": [_num(r["cost"]) for r in rows]},
                      {"label": "Cache savings (USD, est.)", "data": [_num(r["cache_savings"]) for r in rows]}]},
    )


def projection(user, since: datetime, ps=None) -> Table:
    rows = []
    for p in (ps if ps is not None else selectors.projections(user)):
        pr = p.projection
        rows.append([p.workflow.name, pr.sample_size, round(pr.daily_submissions, 2), round(pr.remaining_days, 1),
                     round(pr.month_to_date, 4), round(pr.at_rate.p50, 4), round(pr.at_rate.p95, 4),
                     round(pr.at_10x.p50, 4), round(pr.at_10x.p95, 4),
                     _num(p.budget.monthly_usd) if p.budget else None])
    return Table(
        "projection", "This month's spend, projected (USD)",
        ["Workflow", "Submissions sampled (30 days)", "Submissions a day (last 7 days)", "Days left",
         "Spent this month", "Month end p50", "Month end p95", "At 10x volume p50", "At 10x volume p95", "Budget"],
        rows,
        {"type": "bar", "labels": [r[0] for r in rows],
         "datasets": [{"label": "Spent", "data": [r[4] for r in rows]},
                      {"label": "Month end p95", "data": [r[6] for r in rows]},
                      {"label": "At 10x p95", "data": [r[8] for r in rows]}]},
    )


def model_switch(user, since: datetime, ps=None) -> Table:
    rows = []
    for p in (ps if ps is not None else selectors.projections(user)):
        for s in p.switch:
            rows.append([p.workflow.name, p.primary_model, s["model"], _num(s["cost"]), _num(s["change"]),
                         None if s["change_pct"] is None else round(s["change_pct"], 1)])
    return Table("model-switch", "Switching a workflow's primary model (last 30 days, re-priced)",
                 ["Workflow", "Primary model now", "Instead", "Would have cost (USD)", "Change (USD)", "Change (%)"], rows)


def model_mix(user, since: datetime, ps=None) -> Table:
    rows = []
    for p in (ps if ps is not None else selectors.projections(user)):
        for m in p.model_mix:
            rows.append([p.workflow.name, m["model"], m["calls"], _num(m["cost"]), round(m["share"] * 100, 1)])
    return Table("model-mix", "Model mix per workflow (last 30 days)",
                 ["Workflow", "Model", "Calls", "Cost (USD)", "Share of cost (%)"], rows)


def latency(user, since: datetime) -> Table:
    rows = selectors.latency_by_workflow(user, since)

    def r1(v):
        return None if v is None else round(v, 3)

    return Table(
        "latency", "Latency per workflow",
        ["Workflow", "Model calls", "Call p50 (ms)", "Call p95 (ms)", "Released (non-blocking)",
         "Submitted→released p50 (s)", "Submitted→released p95 (s)", "Target (s)", "Target share (%)",
         "Within target (%)", "Target met"],
        [[r["workflow"], r["calls"], r1(r["call_p50_ms"]), r1(r["call_p95_ms"]), r["released"], r1(r["e2e_p50_s"]),
          r1(r["e2e_p95_s"]), r["target_seconds"], round(r["target_share"] * 100, 1),
          None if r["met_share"] is None else round(r["met_share"] * 100, 1),
          {True: "yes", False: "no", None: "no data"}[r["meets_target"]]] for r in rows],
        {"type": "bar", "labels": [r["workflow"] for r in rows],
         "datasets": [{"label": "p50 (s)", "data": [r1(r["e2e_p50_s"]) for r in rows]},
                      {"label": "p95 (s)", "data": [r1(r["e2e_p95_s"]) for r in rows]},
                      {"label": "Target (s)", "data": [r["target_seconds"] for r in rows]}]},
    )


def lane_mix(user, since: datetime) -> Table:
    rows = selectors.lane_mix_by_day(user, since)
    labels, datasets = _pivot(rows, key="day", series="lane", value="n")
    return Table("lane-mix", "Drafts per day, by lane", ["Day", "Lane", "Drafts"],
                 [[str(r["day"]), r["lane"], r["n"]] for r in rows],
                 {"type": "bar", "labels": labels, "datasets": datasets, "stacked": True})


def decisions(user, since: datetime) -> Table:
    rows = selectors.decisions_by_day(user, since)
    return Table("decisions-by-day", "Review decisions per day", ["Day", "Decisions"],
                 [[str(r["day"]), r["n"]] for r in rows],
                 {"type": "bar", "labels": [str(r["day"]) for r in rows],
                  "datasets": [{"label": "Decisions", "data": [r["n"] for r in rows]}]})


def reviewers(user, since: datetime) -> Table:
    rows = selectors.reviewer_stats(user, since)

    def minutes(v):
        return None if v is None else round(v / 60, 1)

    return Table(
        "reviewers", "Reviewers",
        ["Reviewer", "Decisions", "Approved unchanged", "Approved unchanged (%)", "Time to decision p50 (min)",
         "Time to decision p95 (min)", "Decided after SLA"],
        [[r["reviewer"], r["decisions"], r["unchanged"], round(r["unchanged"] / r["decisions"] * 100, 1),
          minutes(r["p50_s"]), minutes(r["p95_s"]), r["late"]] for r in rows],
    )


def review_workflows(user, since: datetime) -> Table:
    rows = selectors.review_by_workflow(user, since)

    def minutes(v):
        return None if v is None else round(v / 60, 1)

    return Table(
        "review-by-workflow", "Review per workflow",
        ["Workflow", "Decisions", "Time to decision p50 (min)", "Time to decision p95 (min)", "Decided after SLA",
         "Open", "Open past SLA", "Oldest open (min)"],
        [[r["workflow"], r["decisions"], minutes(r["p50_s"]), minutes(r["p95_s"]), r["late"], r["open"], r["overdue"],
          None if r["oldest_minutes"] is None else round(r["oldest_minutes"], 1)] for r in rows],
        {"type": "bar", "labels": [r["workflow"] for r in rows],
         "datasets": [{"label": "Decided after SLA", "data": [r["late"] for r in rows]},
                      {"label": "Open past SLA", "data": [r["overdue"] for r in rows]}]},
    )


def interactions(user, since: datetime) -> Table:
    return Table(
        "interactions", "Cost per interaction (every call of a submission)",
        ["Submission", "Workflow", "Created", "State", "Attempts", "Calls", "Failed calls", "QA calls",
         "Cascade calls", "Tokens", "Cost (USD)"],
        [[s.pk, s.workflow_version.workflow.name, s.created_at.isoformat(timespec="seconds"), s.state, s.attempts,
          s.calls, s.failed_calls, s.qa_calls, s.cascade_calls, s.tokens, _num(s.cost)]
         for s in selectors.interactions(user, since).iterator(chunk_size=2000)],
    )


# The CSV downloads, by file name.
BUILDERS = {
    "cost-by-day": cost_by_day, "cost-by-model": cost_by_model, "cost-by-workflow": cost_by_workflow,
    "projection": projection, "model-switch": model_switch, "model-mix": model_mix, "latency": latency,
    "lane-mix": lane_mix, "decisions-by-day": decisions, "reviewers": reviewers,
    "review-by-workflow": review_workflows, "interactions": interactions,
}
