"""Lists that end: every list pages with one helper (views.common.paginate) and one partial
(templates/_pagination.html); the count shown is the number of rows reachable by following the
links; junk and out-of-range pages never fail; filters and the queue's lane survive paging and
the queue's htmx poll keeps the page the reviewer is on.
"""
from __future__ import annotations

import re
from html import unescape

import pytest
from django.urls import reverse

from tests.conftest import CUSTOMER_REPLY_INPUT
from workflows import audit, services
from workflows.models import AuditEvent, ReviewTask, Submission

from .html import Page

BIG = "9" * 30


def _make_submissions(user, version, n):
    return [
        services.submission_create(version=version, user=user, data=dict(CUSTOMER_REPLY_INPUT)).pk
        for _ in range(n)
    ]


def _walk(client, url, row_ids, headers=None):
    """Follow rel="next" from ``url`` to the end. Returns the ids of every row seen, in order,
    the count each page announced and the pages' hrefs."""
    seen, counts, urls = [], set(), []
    while url:
        urls.append(url)
        response = client.get(url, headers=headers or {})
        assert response.status_code == 200, url
        page = Page(response)
        seen += row_ids(page)
        (status,) = page.all("span", class_="pager-status")
        counts.add(int(status.attrs["data-count"]))
        nexts = page.all("a", rel="next")
        url = unescape(nexts[0].attrs["href"]) if nexts else None
        assert len(urls) < 100, "the pager never ends"
    return seen, counts, urls


def _submission_rows(page):
    return [int(m) for m in re.findall(r'href="/submissions/(\d+)/"', page.html)]


def _queue_rows(page):
    return [int(m) for m in re.findall(r'href="/review/(\d+)/"', page.html)]


def _audit_rows(page):
    return [int(m) for m in re.findall(r"<tr>\s*<td>(\d+)</td>", page.html)]


def test_every_submission_is_reachable_past_the_old_200_cap(demo, people, client_for):
    """205 submissions at the default 50 a page: five pages, each row once, the count agrees."""
    mine = _make_submissions(people["submitter"], demo.version("customer-reply"), 205)
    _make_submissions(people["other_submitter"], demo.version("customer-reply"), 3)  # not the submitter's
    seen, counts, urls = _walk(client_for("submitter"), "/submissions/", _submission_rows)
    assert len(urls) == 5
    assert len(seen) == len(set(seen)) == 205, "no row twice, none missing"
    assert set(seen) == set(mine)
    assert seen == sorted(seen, reverse=True), "newest first, stable across pages"
    assert counts == {205}
    # Compliance reads every submission: the others' three are counted and reachable too.
    seen, counts, _ = _walk(client_for("compliance"), "/submissions/", _submission_rows)
    assert len(set(seen)) == len(seen) == Submission.objects.count() == 208 and counts == {208}


def test_home_links_to_the_whole_list(demo, people, client_for):
    _make_submissions(people["submitter"], demo.version("customer-reply"), 12)
    page = Page(client_for("submitter").get("/"))
    assert len(_submission_rows(page)) == 10, "home shows the ten most recent"
    assert page.by_id("all-submissions").attrs["href"] == reverse("submission_list")


@pytest.fixture
def queue_of(people, routed, settings):
    """``n`` open blocking reviews of customer replies (group A), with a small page size so the
    test stays quick; the page size is the setting every list reads."""
    settings.REVIEWDESK_PAGE_SIZE = 7

    def make(n):
        subs = [routed(people["submitter"]) for _ in range(n)]
        return list(ReviewTask.objects.filter(submission__in=subs).values_list("pk", flat=True))

    return make


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_every_review_task_is_reachable_and_the_tab_count_agrees(queue_of, client_for, htmx):
    tasks = queue_of(23)
    headers = {"HX-Request": "true"} if htmx else {}
    client = client_for("reviewer_a")
    seen, counts, urls = _walk(client, "/review/?lane=blocking_review", _queue_rows, headers)
    assert len(urls) == 4  # 7 + 7 + 7 + 2
    assert len(seen) == len(set(seen)) == 23 and set(seen) == set(tasks)
    first = Page(client.get("/review/?lane=blocking_review"))
    (tab,) = [n for n in first.all("span", class_="count") if n.attrs["data-lane"] == "blocking_review"]
    assert int(tab.text) == 23 and counts == {23}, "the tab, the pager and the rows agree"
    for url in urls[1:]:
        assert "lane=blocking_review" in url, "the lane is kept across pages"


def test_the_queue_pages_by_keyset_and_polls_only_its_counts(queue_of, client_for, people, routed):
    """The queue pages with a cursor (no OFFSET), keeps the lane across pages, and its 15 s poll
    asks for the counts only (out-of-band swaps), never re-reading the rows."""
    queue_of(15)
    client = client_for("reviewer_a")
    first = Page(client.get("/review/?lane=blocking_review", headers={"HX-Request": "true"}))
    (next_link,) = first.all("a", rel="next")
    url = unescape(next_link.attrs["href"])
    assert "after=" in url and "lane=blocking_review" in url and "page=" not in url
    # Pager links swap the queue in place and push the URL, and still work as plain links.
    assert next_link.attrs["hx-target"] == "#queue" and next_link.attrs["hx-push-url"] == "true"
    assert next_link.attrs["href"] == next_link.attrs["hx-get"]
    second = Page(client.get(url, headers={"HX-Request": "true"}))
    assert second.all("span", class_="pager-status")[0].text == "8–14 of 15"
    assert not set(_queue_rows(first)) & set(_queue_rows(second))
    (poll,) = second.all("div", id="queue-poll")
    poll_url = unescape(poll.attrs["hx-get"])
    assert poll_url.startswith("/review/counts/?") and "lane=blocking_review" in poll_url and "shown=15" in poll_url
    assert poll.attrs["hx-trigger"] == "every 15s" and "data-poll-when-idle" in poll.attrs
    answer = client.get(poll_url, headers={"HX-Request": "true"}).content.decode()
    assert 'href="/review/' not in answer.replace('href="/review/?', ""), "the poll carries no rows"
    assert re.search(r'id="count-blocking_review" hx-swap-oob="true">15<', answer)
    assert re.search(r'<p id="queue-fresh"[^>]*hidden', answer), "nothing new: the notice stays hidden"
    routed(people["submitter"])  # a new item arrives
    answer = client.get(poll_url, headers={"HX-Request": "true"}).content.decode()
    assert re.search(r'id="count-blocking_review" hx-swap-oob="true">16<', answer)
    assert "The queue changed since this list was shown: 16 now." in answer


@pytest.mark.parametrize("junk", ["abc", "~~", "-~x~1", "2026-01-01T00:00:00~0~1",  # naive time
                                  "9999-12-31T00:00:00+00:00~0~" + BIG, "9999-12-31T00:00:00+00:00~0~1", "%00", "a~b~c~d"])
def test_a_junk_queue_cursor_gives_the_first_page_with_a_notice(queue_of, client_for, junk):
    queue_of(15)
    client = client_for("reviewer_a")
    first = _queue_rows(Page(client.get("/review/?lane=blocking_review")))
    for headers in ({}, {"HX-Request": "true"}):
        response = client.get("/review/", {"lane": "blocking_review", "after": junk}, headers=headers)
        assert response.status_code == 200, junk
        page = Page(response)
        if _queue_rows(page) != first:  # a well-formed cursor past the end is an empty last page
            assert _queue_rows(page) == [] and junk.endswith("~0~1") and junk.startswith("9999"), junk
        else:
            assert "That page link is not valid any more" in page.html, junk


def test_the_queue_page_after_rows_were_decided_is_the_last_page(queue_of, client_for, people):
    tasks = queue_of(15)  # 3 pages of 7
    for pk in tasks[:9]:  # someone decides 9 of them: 6 left, one page
        ReviewTask.objects.filter(pk=pk).update(state="decided", decision="approved")
    response = client_for("reviewer_a").get("/review/?lane=blocking_review&page=3", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert sorted(_queue_rows(Page(response))) == sorted(tasks[9:])


# The queue pages by keyset (a cursor, not ?page=): test_a_junk_queue_cursor_... covers it.
LISTS = {
    "submissions": ("submitter", "/submissions/", _submission_rows),
    "audit": ("compliance", "/audit/", _audit_rows),
}


@pytest.mark.parametrize("junk, expect", [
    ("abc", "first"), ("", "first"), ("1.5", "first"), ("1e2", "first"), ("%00", "first"),
    ("0", "last"), ("-3", "last"), ("{past_end}", "last"), (BIG, "last"),
])
@pytest.mark.parametrize("which", LISTS)
def test_junk_pages_give_the_first_or_last_page_never_an_error(queue_of, client_for, which, junk, expect):
    """One rule everywhere: not a number -> the first page; out of range -> the last page."""
    queue_of(15)  # 15 submissions, 15 reviews, and well over 15 audit events: 3+ pages each at 7
    who, url, rows = LISTS[which]
    client = client_for(who)
    sep = "&" if "?" in url else "?"
    first = rows(Page(client.get(url)))
    last_url = unescape(Page(client.get(url)).all("a", rel="last")[0].attrs["href"])
    last = rows(Page(client.get(last_url)))
    junk = junk.format(past_end=int(re.search(r"page=(\d+)", last_url).group(1)) + 1)
    for headers in ({}, {"HX-Request": "true"}):
        response = client.get(f"{url}{sep}page={junk}", headers=headers)
        assert response.status_code == 200, (which, junk)
        assert rows(Page(response)) == (first if expect == "first" else last), (which, junk)


def test_audit_filters_are_kept_across_pages_and_the_counts_agree(queue_of, client_for):
    queue_of(9)
    audit.chain_now()  # exports count linked events; the chainer links them after commit (migration 0012)
    client = client_for("compliance")
    url = "/audit/?action=submission.created"
    seen, counts, urls = _walk(client, url, _audit_rows)
    expected = set(AuditEvent.objects.filter(action="submission.created").values_list("pk", flat=True))
    assert len(seen) == len(set(seen)) == 9 and set(seen) == expected
    assert counts == {9} and len(urls) == 2
    assert all("action=submission.created" in u for u in urls)
    # The export offered on the page counts the same rows.
    assert Page(client.get(url)).by_id("export-count").text.startswith("9 events")
    # Unfiltered: every event, newest first, each once.
    seen, counts, _ = _walk(client, "/audit/", _audit_rows)
    assert seen == sorted(AuditEvent.objects.values_list("pk", flat=True), reverse=True) and counts == {len(seen)}


def test_an_empty_list_has_no_pager(client_for, demo):
    page = Page(client_for("submitter").get("/submissions/"))
    assert page.all("nav", class_="pager") == []
    assert "Nothing yet." in page.html
