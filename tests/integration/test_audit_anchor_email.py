"""The e-mail anchor target (workflows.audit_chain.EmailTarget) beside the directory target,
through Django's e-mail backend (locmem in tests)."""
from __future__ import annotations

import json
import smtplib

import pytest
from django.core import mail
from django.core.management import CommandError, call_command

from tests.integration.test_audit_chain import KEY, _events, _Out, _tampering, _verify_audit
from workflows import audit, audit_chain
from workflows.models import AuditEvent
from workflows.vocab import AuditAction

OFFICERS = ["compliance@example.org", "dpo@example.org"]


@pytest.fixture
def both_targets(settings, tmp_path):
    settings.REVIEWDESK_AUDIT_ANCHOR_DIR = tmp_path / "anchors"
    settings.REVIEWDESK_AUDIT_ANCHOR_KEY = KEY
    settings.REVIEWDESK_AUDIT_ANCHOR_EMAIL = OFFICERS
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return settings.REVIEWDESK_AUDIT_ANCHOR_DIR


def test_an_anchor_goes_to_the_directory_and_to_every_compliance_address(db, both_targets):
    events = _events(3)
    call_command("anchor_audit", stdout=_Out())
    files = list(both_targets.glob("anchor-*.json"))
    assert len(files) == 1 and len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == OFFICERS and f"event {events[-1].pk} (3 events)" in message.subject
    (name, content, mimetype), = message.attachments
    # The same signed document in both places, under the same name.
    assert name == files[0].name and mimetype == "application/json"
    assert json.loads(content) == json.loads(files[0].read_text())
    assert json.loads(content)["hmac_sha256"] == audit_chain.sign(
        {k: json.loads(content)[k] for k in ("version", "event_id", "hash", "count", "anchored_at")}, KEY.encode())
    assert events[-1].hash in message.body and "verify_audit --anchor-dir" in message.body
    recorded = AuditEvent.objects.get(action=AuditAction.AUDIT_ANCHORED)
    assert recorded.payload["target"] == "directory+email"
    assert recorded.payload["location"] == f"{files[0]}; email:{','.join(OFFICERS)}"
    assert "failed_targets" not in recorded.payload


def test_a_saved_e_mail_attachment_catches_a_cut_tail_when_the_directory_is_gone(db, both_targets, tmp_path):
    """The directory's anchors were deleted along with the tail; the officer's saved
    attachment still names the missing events."""
    events = _events(4)
    audit_chain.anchor_head()
    (name, content, _), = mail.outbox[0].attachments
    saved = tmp_path / "from-mail"
    saved.mkdir()
    (saved / name).write_text(content)
    for file in both_targets.glob("anchor-*.json"):
        file.unlink()
    audit.chain_now()  # events are linked after their commit (migration 0012)
    with _tampering() as cursor:
        cursor.execute("DELETE FROM workflows_auditevent WHERE id >= %s", [events[-1].pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok
    assert "no anchor yet" in _verify_audit()  # the directory alone has nothing left
    with pytest.raises(CommandError, match=f"anchored event {events[-1].pk} is missing"):
        call_command("verify_audit", "--anchor-dir", str(saved), stdout=_Out())


def test_a_failing_mail_server_still_anchors_to_the_directory_and_says_so(db, both_targets, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")

    monkeypatch.setattr("django.core.mail.backends.locmem.EmailBackend.send_messages", refuse)
    _events(2)
    anchor = audit_chain.anchor_head()
    assert list(both_targets.glob("anchor-*.json")) and anchor.location.startswith(str(both_targets))
    recorded = AuditEvent.objects.get(action=AuditAction.AUDIT_ANCHORED)
    assert recorded.payload["failed_targets"] == ["email"]


def test_when_no_target_takes_the_anchor_it_is_refused(db, both_targets, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")

    monkeypatch.setattr("django.core.mail.backends.locmem.EmailBackend.send_messages", refuse)
    both_targets.parent.joinpath("anchors").write_text("a file where the directory should be")
    _events(1)
    with pytest.raises(audit_chain.AnchorError, match="email: SMTPServerDisconnected"):
        audit_chain.anchor_head()
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_ANCHORED).exists()


def test_without_addresses_only_the_directory_is_used(db, both_targets, settings):
    settings.REVIEWDESK_AUDIT_ANCHOR_EMAIL = []
    assert isinstance(audit_chain.default_target(), audit_chain.DirectoryTarget)
    _events(1)
    audit_chain.anchor_head()
    assert mail.outbox == []
