"""What the review queue page costs the database (docs/ARCHITECTURE.md "Review queue", "What a
page costs"): the scope matches workflows by their version ids, so every version of a workflow
must still be in the queue and in its workflow filter; the three tab counts are one statement;
the row statement joins no table only a name comes from."""
from __future__ import annotations

import re

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext

from workflows import selectors, services
from workflows.definitions import parse_definition
from workflows.models import ReviewTask

DEMO = "workflows/demo_workflows/customer-reply.yaml"


def _ids(response) -> set[str]:
    assert response.status_code == 200
    return set(re.findall(r'data-task="(\d+)"', response.content.decode()))


def _task_id(submission) -> str:
    return str(ReviewTask.objects.get(submission=submission).pk)


def test_every_version_of_a_workflow_is_in_the_queue_and_its_filter(people, routed, client_for, demo):
    first = routed(people["submitter"])
    definition = yaml.safe_load(open(DEMO).read())
    definition["routing"]["priority"] = "high"
    version, created = services.workflow_publish(spec=parse_definition(definition))
    assert created
    second = routed(people["submitter"])
    assert first.workflow_version_id != version.pk == second.workflow_version_id
    both = {_task_id(first), _task_id(second)}
    reviewer = client_for("reviewer_a")
    assert _ids(reviewer.get("/review/")) == both
    assert _ids(reviewer.get("/review/?workflow=customer-reply")) == both
    counts = reviewer.get("/review/counts/?lane=blocking_review&shown=0", headers={"HX-Request": "true"})
    assert re.search(r'id="count-blocking_review"[^>]*>2<', counts.content.decode())
    # Another group's reviewer sees neither, and may not filter on a workflow they do not review.
    other = client_for("reviewer_b")
    assert _ids(other.get("/review/")) == set()
    page = other.get("/review/?workflow=customer-reply").content.decode()
    assert "You review no workflow" in page and not re.search(r'data-task="\d+"', page)


@pytest.mark.parametrize("query", ["", "?lane=async_review&workflow=customer-reply&finding=none&age=1h"])
def test_the_three_counts_are_one_statement_and_rows_join_no_name_tables(people, routed, client_for, query):
    routed(people["submitter"])
    client = client_for("reviewer_a")
    client.get("/review/")  # warm the session
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/review/" + query).status_code == 200
    sqls = [q["sql"] for q in ctx.captured_queries]
    counts = [s for s in sqls if "COUNT(*)" in s.upper()]
    assert len(counts) == 1, counts
    assert counts[0].count(f"LIMIT {selectors.QUEUE_COUNT_CAP + 1}") == len(selectors.QUEUE_TABS)
    (rows,) = [s for s in sqls if s.startswith('SELECT "workflows_reviewtask"."id"') and "ORDER BY" in s]
    outer_joins = re.sub(r"\(SELECT .*?\) AS \"\w+\"", "", rows)  # the scalar subqueries' own FROMs aside
    assert "workflows_workflowversion" not in outer_joins and '"auth_user"' not in outer_joins, rows
    assert '"workflows_submission"."workflow_version_id" IN (' in rows
