"""Settings read the environment through one helper that fails loudly (DESIGN.md section 8.6)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reviewdesk.env import ImproperlyConfiguredEnv, env_bool, env_float, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 25 + "Q7-xZ" * 5  # 50 characters, no default marker


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), (" TRUE ", True), ("yes", True), ("on", True),
                                        ("0", False), ("false", False), ("No", False), ("off", False), ("", False)])
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, value):
    monkeypatch.setenv("RD_TEST_FLAG", raw)
    assert env_bool("RD_TEST_FLAG", default=not value) is value


@pytest.mark.parametrize("raw", ["ture", "flase", "2", "enabled"])
def test_env_bool_rejects_a_typo_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("DJANGO_DEBUG", raw)
    with pytest.raises(ImproperlyConfiguredEnv) as info:
        env_bool("DJANGO_DEBUG")
    assert str(info.value).startswith(f"DJANGO_DEBUG={raw!r} is not a boolean")


def test_env_bool_default_when_unset(monkeypatch):
    monkeypatch.delenv("RD_TEST_FLAG", raising=False)
    assert env_bool("RD_TEST_FLAG", True) is True
    assert env_bool("RD_TEST_FLAG", False) is False


@pytest.mark.parametrize("raw", ["ten", "1.5", "3x", "0x10"])
def test_env_int_rejects_non_integers(monkeypatch, raw):
    monkeypatch.setenv("REVIEWDESK_DB_POOL_MAX", raw)
    with pytest.raises(ImproperlyConfiguredEnv, match=r"^REVIEWDESK_DB_POOL_MAX=.* is not an integer"):
        env_int("REVIEWDESK_DB_POOL_MAX", 10)


def test_env_int_parses_defaults_and_minimum(monkeypatch):
    monkeypatch.setenv("RD_TEST_INT", " 12 ")
    assert env_int("RD_TEST_INT", 3) == 12
    monkeypatch.setenv("RD_TEST_INT", "")
    assert env_int("RD_TEST_INT", 3) == 3
    monkeypatch.setenv("RD_TEST_INT", "0")
    with pytest.raises(ImproperlyConfiguredEnv, match="RD_TEST_INT=0 must be at least 1"):
        env_int("RD_TEST_INT", 3, minimum=1)


def test_env_float_and_list_and_str(monkeypatch):
    monkeypatch.setenv("RD_TEST_FLOAT", "2.5")
    assert env_float("RD_TEST_FLOAT", 1.0) == 2.5
    monkeypatch.setenv("RD_TEST_FLOAT", "fast")
    with pytest.raises(ImproperlyConfiguredEnv, match="RD_TEST_FLOAT='fast' is not a number"):
        env_float("RD_TEST_FLOAT", 1.0)
    monkeypatch.setenv("RD_TEST_LIST", " a.example, ,b.example ")
    assert env_list("RD_TEST_LIST", []) == ["a.example", "b.example"]
    monkeypatch.setenv("RD_TEST_STR", "  padded  ")
    assert env_str("RD_TEST_STR") == "padded"


# --- production mode, in a fresh process as a deployment would start --------------------


def _start(**overrides) -> subprocess.CompletedProcess:
    """Import the settings and set Django up in a new process with the given environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "reviewdesk.settings"
    env.update({k: v for k, v in overrides.items() if v is not None})
    code = "import django; django.setup(); from django.conf import settings; print('DEBUG', settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_production_without_a_secret_key_refuses_to_start():
    proc = _start(DJANGO_DEBUG="false", DJANGO_ALLOWED_HOSTS="reviewdesk.example.com")
    assert proc.returncode != 0
    assert "DJANGO_SECRET_KEY is required when DJANGO_DEBUG=false" in proc.stderr


@pytest.mark.parametrize(
    "key",
    [
        "dev-insecure-reviewdesk-key-do-not-use-in-production",  # the development default
        "short-key-123",
        "change-me-change-me-change-me-change-me-change-me",
        " " * 60,  # blank after stripping counts as missing
    ],
)
def test_production_with_a_default_or_weak_key_refuses_to_start(key):
    proc = _start(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=key, DJANGO_ALLOWED_HOSTS="reviewdesk.example.com")
    assert proc.returncode != 0
    assert "DJANGO_SECRET_KEY" in proc.stderr


def test_production_without_allowed_hosts_refuses_to_start():
    proc = _start(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=GOOD_KEY)
    assert proc.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS is required" in proc.stderr


def test_production_with_a_real_key_and_hosts_starts():
    assert len(GOOD_KEY) == 50
    proc = _start(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=GOOD_KEY, DJANGO_ALLOWED_HOSTS="reviewdesk.example.com")
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG False" in proc.stdout


def test_debug_typo_stops_the_process_naming_the_variable():
    proc = _start(DJANGO_DEBUG="ture")
    assert proc.returncode != 0
    assert "DJANGO_DEBUG='ture' is not a boolean" in proc.stderr


def test_development_default_starts_without_a_key():
    proc = _start(DJANGO_DEBUG="true")
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG True" in proc.stdout


def test_a_stale_limit_shorter_than_the_task_time_limit_is_refused():
    # Otherwise the sweep would take over generations that are still running.
    proc = _start(REVIEWDESK_TASK_TIME_LIMIT="300", REVIEWDESK_GENERATION_STALE_SECONDS="60")
    assert proc.returncode != 0
    assert "REVIEWDESK_GENERATION_STALE_SECONDS=60 must be at least 330" in proc.stderr


def test_notification_retention_takes_zero_for_forever_but_not_a_negative_number():
    refused = _start(REVIEWDESK_NOTIFICATION_RETENTION_DAYS="-1")
    assert refused.returncode != 0
    assert "REVIEWDESK_NOTIFICATION_RETENTION_DAYS=-1 must be at least 0" in refused.stderr
    forever = _start(REVIEWDESK_NOTIFICATION_RETENTION_DAYS="0")
    assert forever.returncode == 0, forever.stderr
