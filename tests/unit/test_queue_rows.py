"""The queue rows' time filters write exactly what Django's |date wrote in their place (the
queue page's text must not change with the faster filters), in the current time zone too."""
from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django.template import engines
from django.utils import timezone

TIMES = [
    datetime(2026, 11, 26, 9, 5, 7, tzinfo=dt_timezone.utc),
    datetime(2026, 1, 2, 23, 59, 59, 999999, tzinfo=dt_timezone.utc),
    datetime(2027, 3, 28, 0, 30, tzinfo=dt_timezone(timedelta(hours=-7))),
    datetime(999, 12, 31, 13, 0, tzinfo=dt_timezone.utc),
    None,
]


def render(source: str, value) -> str:
    return engines["django"].from_string("{% load queue_rows %}" + source).render({"t": value})


@pytest.mark.parametrize("value", TIMES)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns"])
def test_minute_and_clock_write_what_date_wrote(value, zone):
    with timezone.override(ZoneInfo(zone)):
        assert render("{{ t|minute }}", value) == render('{{ t|date:"Y-m-d H:i" }}', value)
        assert render('{{ t|minute|default:"—" }}', value) == render('{{ t|date:"Y-m-d H:i"|default:"—" }}', value)
        assert render("{{ t|clock }}", value) == render('{{ t|date:"H:i" }}', value)
    if value is not None:
        assert render("{{ t|minute }}", value).count(":") == 1  # a real time, not an empty string


def test_an_empty_time_is_empty():
    assert render("{{ t|minute }}|{{ t|clock }}", None) == "|"
    assert render('{{ t|minute|default:"—" }}', "") == "—"
