"""A session whose row vanished while the request ran (under database faults: the session
INSERT of an earlier request lost with its connection) is answered as an interrupted request
(409, in words), not Django's bare 400 "the session was deleted"; the session is not
re-created (a log-out in another tab must stay a log-out)."""
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client


def test_a_session_that_vanished_mid_request_is_an_interrupted_request_in_words(demo, monkeypatch):
    client = Client()
    client.force_login(demo.users["submitter"])
    assert client.get("/workflows/customer-reply/new/").status_code == 200
    save = SessionStore.save

    def vanish_then_save(self, must_create=False):
        # The row goes away between the request's start and its session save; the real save
        # then updates no row and Django raises SessionInterrupted.
        Session.objects.filter(session_key=self.session_key).delete()
        return save(self, must_create=must_create)

    monkeypatch.setattr(SessionStore, "save", vanish_then_save)
    response = client.post("/workflows/customer-reply/new/", {"customer_name": "Ann", "channel": "email"})
    assert response.status_code == 409
    assert "Your request was interrupted" in response.content.decode()
    assert "may not have" in response.content.decode()
    assert not Session.objects.exists()  # not re-created
