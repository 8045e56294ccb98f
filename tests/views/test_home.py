"""The home page of every role, and the label that says drafts are not from a model."""
from __future__ import annotations

import pytest

from .html import Page

# What each role must find on its home page (the link that starts its work).
HOME_LINKS = {
    "submitter": ["/workflows/customer-reply/new/", "/workflows/compliance-report/new/", "/workflows/underwriting-memo/new/"],
    "reviewer_a": ["/review/?lane=blocking_review", "/review/?lane=async_review"],
    "dual": ["/workflows/customer-reply/new/", "/review/?lane=blocking_review"],
    "compliance": ["/audit/"],
    "wfadmin": ["/submissions/"],
}
ABSENT_LINKS = {
    "submitter": ["/review/", "/audit/"],
    "reviewer_a": ["/workflows/customer-reply/new/", "/audit/"],
    "compliance": ["/workflows/customer-reply/new/", "/review/"],
    "wfadmin": ["/workflows/customer-reply/new/", "/review/", "/audit/"],
}


@pytest.mark.parametrize("who", sorted(HOME_LINKS))
def test_home_renders_for_each_role(client_for, people, who, settings):
    settings.OPENAI_API_KEY = ""
    response = client_for(who).get("/")
    assert response.status_code == 200
    page = Page(response)
    hrefs = {n.attrs.get("href") for n in page.all("a")}
    assert set(HOME_LINKS[who]) <= hrefs
    assert not set(ABSENT_LINKS.get(who, [])) & hrefs
    assert page.all("span", class_="username")[0].text == people[who].username


def test_offline_badge_shows_without_an_api_key(client_for, settings):
    settings.OPENAI_API_KEY = ""
    page = Page(client_for("submitter").get("/"))
    (badge,) = page.all("span", class_="badge-offline")
    assert badge.text == "Offline draft engine"


def test_no_offline_badge_with_an_api_key(client_for, settings):
    settings.OPENAI_API_KEY = "sk-test-reviewdesk"
    response = client_for("submitter").get("/")
    assert response.status_code == 200
    assert Page(response).all("span", class_="badge-offline") == []
    assert "Offline draft engine" not in response.content.decode()


def test_login_page_has_no_badge_or_menu_for_anonymous(client, db, settings):
    settings.OPENAI_API_KEY = ""
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    page = Page(response)
    assert page.all("nav") == [] and page.all("span", class_="badge-offline") == []
    assert page.by_id("id_username") is not None and page.by_id("id_password") is not None


def test_not_found_page_keeps_the_apps_layout(client_for):
    response = client_for("submitter").get("/submissions/999999/")
    assert response.status_code == 404
    page = Page(response)
    assert page.all("span", class_="username")[0].text == "submitter"
    assert "not yours to see" in response.content.decode()


def test_a_csrf_failure_explains_that_nothing_was_saved(people):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(people["reviewer_a"])
    response = client.post("/review/1/claim/")
    assert response.status_code == 403
    assert "nothing was saved" in response.content.decode()


def test_workflow_admins_see_every_workflow_with_its_current_version(client_for, demo):
    response = client_for("wfadmin").get("/")
    assert Page(response).by_id("admin-workflows") is not None
    text = response.content.decode()
    for slug in ("customer-reply", "compliance-report", "underwriting-memo"):
        assert f"<code>{slug}</code>" in text
    assert Page(client_for("submitter").get("/")).by_id("admin-workflows") is None


def test_the_home_page_query_count_does_not_grow_with_submissions(client_for, people, routed):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert client_for("submitter").get("/").status_code == 200
        return len(ctx.captured_queries)

    routed(people["submitter"])
    one = queries()
    for _ in range(4):
        routed(people["submitter"])
    assert queries() == one
