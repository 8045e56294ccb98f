"""The offline PII detector (workflows/pipeline/pii_detect.py): what it finds, what it leaves."""
from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workflows.pipeline import pii_detect
from workflows.pipeline.pii_detect import detect


def kinds_and_values(text: str) -> list[tuple[str, str]]:
    return [(d.entity_type, d.text(text)) for d in detect(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to jane.doe@example.co.uk today", "EMAIL_ADDRESS", "jane.doe@example.co.uk"),
        ("call me on +44 20 7946 0958 after six", "PHONE_NUMBER", "+44 20 7946 0958"),
        ("my number is (212) 555-0134.", "PHONE_NUMBER", "(212) 555-0134"),
        ("mobile 07700 900123", "PHONE_NUMBER", "07700 900123"),
        ("phone 2125550134", "PHONE_NUMBER", "2125550134"),
        ("paid with 4111 1111 1111 1111 yesterday", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),
        ("my SSN is 536-22-1845", "US_SSN", "536-22-1845"),
        ("ITIN 912-70-1234", "US_ITIN", "912-70-1234"),
        ("NI number AB 12 34 56 C", "UK_NINO", "AB 12 34 56 C"),
        ("NHS number 943 476 5919", "UK_NHS", "943 476 5919"),
        ("licence MORGA657054SM9IJ", "UK_DRIVING_LICENCE", "MORGA657054SM9IJ"),
        ("DNI 12345678Z", "ES_NIF", "12345678Z"),
        ("NIE X1234567L", "ES_NIE", "X1234567L"),
        ("codice fiscale RSSMRA85T10A562S", "IT_FISCAL_CODE", "RSSMRA85T10A562S"),
        ("PESEL 44051401359", "PL_PESEL", "44051401359"),
        ("TFN 123 456 782", "AU_TFN", "123 456 782"),
        ("passport 912803456", "US_PASSPORT", "912803456"),
        ("NRIC S1234567D", "SG_NRIC_FIN", "S1234567D"),
        ("logged in from 203.0.113.7 twice", "IP_ADDRESS", "203.0.113.7"),
        ("from fe80::1ff:fe23:4567:890a", "IP_ADDRESS", "fe80::1ff:fe23:4567:890a"),
        ("send to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "CRYPTO", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
        ("Hello, my name is Jane Doe and my parcel broke.", "PERSON", "Jane Doe"),
        ("I spoke to Mrs O'Neil-Smith on Monday.", "PERSON", "O'Neil-Smith"),
        ("Dear Zoë Müller,\nthank you.", "PERSON", "Zoë Müller"),
        ("It broke again.\n\nKind regards,\nJ. R. Hartley", "PERSON", "J. R. Hartley"),
        ("Thanks, Sarah", "PERSON", "Sarah"),
    ],
)
def test_each_kind_is_found_with_its_exact_span(text, kind, value):
    assert (kind, value) in kinds_and_values(text)


@pytest.mark.parametrize(
    "text",
    [
        "paid with 4111 1111 1111 1112 yesterday",  # fails the Luhn check
        "IBAN GB83 WEST 1234 5698 7654 32 please",  # fails the mod-97 check
        "My parcel arrived on 3 March 2024 at 10:30 and cost £42.50 (order 2125550134).",
        "Tracking 1Z999AA10123456784, invoice INV-2024-00017, SKU 88812345, ref 046454286.",
        "See https://www.example.com/help or example.org for the returns policy.",
        "Dear Customer,\nDear Sir or Madam,\nDear Support Team,",
        "Best,\nThe Acme Team",
        "Thanks for the help. MY NAME IS JOHN. Ann called twice.",
        "The box was 30x40x50 cm; chapter 11, section 4.2; ratio 3:2; room 101.",
    ],
)
def test_ordinary_business_text_is_left_alone(text):
    assert detect(text) == []


def test_bare_digit_ids_need_their_context_word():
    assert detect("order 130692544") == []
    assert kinds_and_values("SIN 130 692 544") == [("CA_SIN", "130 692 544")]
    assert detect("ticket 9434765919") == []
    assert kinds_and_values("nhs 9434765919")[0][0] in {"UK_NHS", "PHONE_NUMBER"}


def test_a_url_inside_an_email_is_not_a_second_entity():
    assert kinds_and_values("mail ann@shop.example.com now") == [("EMAIL_ADDRESS", "ann@shop.example.com")]


def test_spans_never_overlap_and_come_in_order():
    text = "Jane <jane@example.com>, +44 20 7946 0958, card 4111111111111111, ip 10.0.0.1; call 07700 900123"
    found = detect(text)
    assert [d.start for d in found] == sorted(d.start for d in found)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


def test_empty_and_blank_text():
    assert detect("") == []
    assert detect("   \n ") == []


def test_the_engine_is_built_once_per_process_even_under_concurrent_first_use(monkeypatch):
    builds = []

    def slow_build():
        builds.append(1)
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(pii_detect, "_engine", None)
    monkeypatch.setattr(pii_detect, "load_seconds", None)
    monkeypatch.setattr(pii_detect, "_build", slow_build)
    got = []
    threads = [threading.Thread(target=lambda: got.append(pii_detect.analyzer())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len({id(engine) for engine in got}) == 1


def test_the_same_engine_serves_many_threads():
    texts = [f"write to user{i}@example.com or call +44 20 7946 09{i:02d}" for i in range(40)]
    results: dict[int, list] = {}

    def work(i):
        results[i] = kinds_and_values(texts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, text in enumerate(texts):
        assert results[i] == kinds_and_values(text)
        assert [k for k, _ in results[i]] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]


def record_network_attempts(monkeypatch) -> list:
    """Refuse every resolve or connect (as an unplugged cable would) and record the attempt."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def no_network(monkeypatch):
    """The test fails if anything even tried the network (tldextract would fetch the PSL)."""
    attempts = record_network_attempts(monkeypatch)
    yield attempts
    assert attempts == []


def test_the_guard_catches_what_it_guards_against(monkeypatch, caplog):
    import tldextract

    attempts = record_network_attempts(monkeypatch)
    tldextract.TLDExtract(cache_dir=None)("shop.example.co.uk")  # the library default fetches
    assert attempts


def test_building_and_running_the_detector_never_touches_the_network(no_network, monkeypatch):
    monkeypatch.setattr(pii_detect, "_engine", None)
    monkeypatch.setattr(pii_detect, "load_seconds", None)
    engine = pii_detect.analyzer()  # a fresh build under the guard
    assert engine is pii_detect.analyzer()
    # Domains the warm-up did not see, including a new and a multi-part public suffix.
    text = "a@b.co.uk, c@d.museum, e@f.xn--p1ai, g@h.com.au, i@j.dev, k@l.notatld"
    assert [v for k, v in kinds_and_values(text) if k == "EMAIL_ADDRESS"] == [
        "a@b.co.uk", "c@d.museum", "e@f.xn--p1ai", "g@h.com.au", "i@j.dev"]


def test_the_tld_extractor_reads_only_the_bundled_snapshot(no_network):
    extract = pii_detect.offline_tld_extractor()
    assert extract("shop.example.co.uk").suffix == "co.uk"
    assert extract.suffix_list_urls == ()
    assert extract._cache.enabled is False  # no cache directory is read or written


def test_load_and_per_call_time_stay_small():
    pii_detect.analyzer()
    assert pii_detect.load_seconds is not None and pii_detect.load_seconds < 20
    text = "My parcel arrived broken; call me on 07700 900123 or write to jane@example.com."
    started = time.perf_counter()
    for _ in range(50):
        detect(text)
    per_call = (time.perf_counter() - started) / 50
    assert per_call < 0.1, f"{per_call * 1000:.1f} ms per call"


def test_entity_types_lists_what_detect_can_return():
    types = pii_detect.entity_types()
    expected = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NINO", "IP_ADDRESS",
                "PERSON")
    for kind in expected:
        assert kind in types
    for noisy in ("URL", "DATE_TIME", "NRP", "LOCATION"):
        assert noisy not in types


_FRESH_PROCESS = """
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network access refused")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
import django
django.setup()
from workflows.pipeline import pii_detect
found = pii_detect.detect("write to a@b.co.uk or c@d.museum, call +44 20 7946 0958")
assert [d.entity_type for d in found] == ["EMAIL_ADDRESS", "EMAIL_ADDRESS", "PHONE_NUMBER"], found
assert attempts == [], attempts
print(f"ok {pii_detect.load_seconds:.3f}")
"""


def test_a_fresh_process_imports_builds_and_detects_without_the_network():
    """From the first import on, with the guard installed before anything is loaded."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "reviewdesk.settings")}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], check=False, cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
