"""Properties of redaction over arbitrary text with e-mails and phone numbers mixed in."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.pipeline import pii
from workflows.pipeline.pii_detect import detect

_LOCAL = st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: ".." not in s)
_DOMAIN = st.sampled_from(["example.com", "mail.example.co.uk", "shop.example.org", "example.de", "uni.example.edu"])
emails = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
phones = st.one_of(
    st.integers(0, 999).map(lambda n: f"+44 20 7946 0{n:03d}"),
    st.integers(100, 999).map(lambda n: f"(212) {n + 100 if n < 200 else n}-0{n % 100:02d}1"[:14]),
    st.integers(0, 999999).map(lambda n: f"07700 {n:06d}"),
    st.integers(0, 9999).map(lambda n: f"+1 415 555 {n:04d}"),
)
pieces = st.lists(st.one_of(st.text(max_size=40), emails, phones), min_size=1, max_size=8)

# No example database: the tests leave no .hypothesis directory behind in the checkout.
SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def memo_spec(demo_spec):
    return demo_spec("underwriting-memo")  # no pii: true fields, so only the detector acts


@SETTINGS
@given(parts=pieces)
def test_restore_of_mask_is_the_identity(memo_spec, parts):
    text = " ".join(parts)
    redaction = pii.redact(memo_spec, {"business_name": "Acme"})
    assert pii.restore(redaction.mask(text), redaction, is_json=False) == text


@SETTINGS
@given(parts=pieces)
def test_redact_then_restore_is_the_identity_and_no_detected_value_survives(memo_spec, parts):
    text = " ".join(parts)
    redaction = pii.redact(memo_spec, {"business_name": "Acme", "notes": text})
    redacted = redaction.values["notes"]
    assert pii.restore(redacted, redaction, is_json=False) == text
    for found in detect(text):
        if found.entity_type in ("EMAIL_ADDRESS", "PHONE_NUMBER"):
            assert found.text(text) not in redacted
    assert [d for d in detect(redacted) if d.entity_type in ("EMAIL_ADDRESS", "PHONE_NUMBER")] == []


@SETTINGS
@given(parts=pieces)
def test_inserted_emails_never_reach_the_prompt(memo_spec, parts):
    text = " ".join(parts)
    redacted = pii.redact(memo_spec, {"notes": text}).values["notes"]
    for part in parts:
        if "@" in part and part in text and detect(part):
            assert part not in redacted


@SETTINGS
@given(parts=pieces)
def test_redaction_is_deterministic(memo_spec, parts):
    text = " ".join(parts)
    assert pii.redact(memo_spec, {"notes": text}).values == pii.redact(memo_spec, {"notes": text}).values


@SETTINGS
@given(parts=pieces, key=st.text(max_size=10))
def test_restore_inside_json_keeps_the_document_valid(memo_spec, parts, key):
    text = " ".join(parts)
    redaction = pii.redact(memo_spec, {"notes": text})
    answer = json.dumps({"memo": redaction.values["notes"], key: [redaction.values["notes"]]})
    assert json.loads(pii.restore(answer, redaction, is_json=True)) == {"memo": text, key: [text]}
