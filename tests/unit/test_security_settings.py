"""Production settings are secure by default (issue 10): HTTPS redirect and HSTS unless the
environment turns them off, health endpoints still answer over plain HTTP, a CSP without
'unsafe-inline', and `manage.py check --deploy --fail-level WARNING` passes. Each case starts a
fresh process with the environment a deployment would give it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 25 + "Q7-xZ" * 5
PRODUCTION = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": GOOD_KEY, "DJANGO_ALLOWED_HOSTS": "reviewdesk.example.com"}


def _env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "reviewdesk.settings"
    env.update(overrides)
    return env


def _settings(**overrides) -> dict:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k, None) for k in ['DEBUG', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', "
        "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', 'SECURE_REDIRECT_EXEMPT', 'SECURE_PROXY_SSL_HEADER', "
        "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'CSRF_COOKIE_HTTPONLY', 'SESSION_COOKIE_HTTPONLY', "
        "'SESSION_COOKIE_AGE', 'SILENCED_SYSTEM_CHECKS', 'AXES_FAILURE_LIMIT', 'CONTENT_SECURITY_POLICY']} | "
        "{'AXES_COOLOFF_MINUTES': s.AXES_COOLOFF_TIME.total_seconds() / 60}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(**overrides), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_deploy(**overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                          env=_env(**overrides), capture_output=True, text=True, timeout=120)


def test_production_is_https_only_with_hsts_by_default():
    s = _settings(**PRODUCTION)
    assert s["DEBUG"] is False
    assert s["SECURE_SSL_REDIRECT"] is True
    assert s["SECURE_HSTS_SECONDS"] == 31536000 and s["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert s["SECURE_HSTS_PRELOAD"] is False
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True
    assert s["SESSION_COOKIE_HTTPONLY"] is True and s["CSRF_COOKIE_HTTPONLY"] is True
    assert s["SESSION_COOKIE_AGE"] == 12 * 3600
    assert s["SECURE_PROXY_SSL_HEADER"] is None
    # The health endpoints, and /metrics for in-cluster scrapes (token-protected), stay
    # reachable over plain HTTP.
    assert s["SECURE_REDIRECT_EXEMPT"] == [r"^healthz$", r"^readyz$", r"^metrics$"]


def test_development_neither_redirects_nor_sends_hsts():
    s = _settings(DJANGO_DEBUG="true")
    assert s["SECURE_SSL_REDIRECT"] is False and s["SECURE_HSTS_SECONDS"] == 0


def test_the_environment_turns_each_default_off_or_tunes_it():
    s = _settings(**PRODUCTION, DJANGO_SSL_REDIRECT="false", DJANGO_BEHIND_TLS_PROXY="true", DJANGO_HSTS_SECONDS="600",
                  DJANGO_HSTS_INCLUDE_SUBDOMAINS="false", DJANGO_HSTS_PRELOAD="true", DJANGO_SESSION_COOKIE_AGE="3600",
                  REVIEWDESK_LOGIN_FAILURE_LIMIT="8", REVIEWDESK_LOGIN_COOLOFF_MINUTES="30")
    assert s["SECURE_SSL_REDIRECT"] is False
    assert s["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert (s["SECURE_HSTS_SECONDS"], s["SECURE_HSTS_INCLUDE_SUBDOMAINS"], s["SECURE_HSTS_PRELOAD"]) == (600, False, True)
    assert s["SESSION_COOKIE_AGE"] == 3600
    assert s["AXES_FAILURE_LIMIT"] == 8 and s["AXES_COOLOFF_MINUTES"] == 30
    # With preload on, its check is no longer silenced; the proxy says it redirects, so W008 is.
    assert s["SILENCED_SYSTEM_CHECKS"] == ["security.W008"]


@pytest.mark.parametrize("name, value, message", [
    ("REVIEWDESK_LOGIN_FAILURE_LIMIT", "0", "REVIEWDESK_LOGIN_FAILURE_LIMIT=0 must be at least 1"),
    ("REVIEWDESK_LOGIN_COOLOFF_MINUTES", "soon", "REVIEWDESK_LOGIN_COOLOFF_MINUTES='soon' is not an integer"),
    ("DJANGO_SSL_REDIRECT", "ture", "DJANGO_SSL_REDIRECT='ture' is not a boolean"),
])
def test_a_malformed_security_variable_stops_the_process(name, value, message):
    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
                          env=_env(**PRODUCTION, **{name: value}), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr


def test_the_content_security_policy_allows_nothing_inline():
    directives = _settings(**PRODUCTION)["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    every_source = " ".join(" ".join(v) for v in directives.values())
    assert "unsafe-inline" not in every_source and "unsafe-eval" not in every_source


def test_check_deploy_passes_with_production_settings():
    proc = _check_deploy(**PRODUCTION)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only the preload check is silenced, for the reason written in settings.py.
    assert "System check identified no issues (1 silenced)." in proc.stdout


def test_check_deploy_warns_when_nothing_sends_plain_http_to_https():
    # DJANGO_SSL_REDIRECT=false without a TLS proxy: a plain-HTTP deployment, and check says so.
    proc = _check_deploy(**PRODUCTION, DJANGO_SSL_REDIRECT="false")
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "security.W008" in output and output.count("(security.") == 1, output


def test_check_deploy_passes_when_the_tls_proxy_redirects():
    proc = _check_deploy(**PRODUCTION, DJANGO_SSL_REDIRECT="false", DJANGO_BEHIND_TLS_PROXY="true")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_deploy_passes_with_hsts_preload_on():
    proc = _check_deploy(**PRODUCTION, DJANGO_HSTS_PRELOAD="true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "System check identified no issues (0 silenced)." in proc.stdout


def test_plain_http_is_redirected_but_the_health_endpoints_answer(tmp_path):
    """What the docker-compose healthcheck does (GET http://127.0.0.1:8000/healthz with the first
    allowed host) still works with the HTTPS redirect on; a page is sent to HTTPS with HSTS."""
    code = (
        "import django; django.setup(); from django.test import Client; c = Client(); "
        "h = c.get('/healthz', HTTP_HOST='reviewdesk.example.com'); "
        "r = c.get('/readyz', HTTP_HOST='reviewdesk.example.com'); "
        "p = c.get('/accounts/login/', HTTP_HOST='reviewdesk.example.com'); "
        "s = c.get('/healthz', HTTP_HOST='reviewdesk.example.com', secure=True); "
        "print(h.status_code, r.status_code, p.status_code, p.get('Location'), s.status_code, "
        "s.get('Strict-Transport-Security'), sep='|')"
    )
    env = _env(**PRODUCTION, DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    health, ready, page, location, secure, hsts = proc.stdout.strip().splitlines()[-1].split("|")
    assert health == "200"
    assert ready in ("200", "503")  # answered (whatever the broker says), not redirected
    assert page == "301" and location == "https://reviewdesk.example.com/accounts/login/"
    assert secure == "200" and hsts == "max-age=31536000; includeSubDomains"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_compose_healthcheck_passes_against_gunicorn_with_the_https_redirect_on(tmp_path):
    """The web service's healthcheck script from docker-compose.yml, run as it is against a real
    gunicorn with production settings and DJANGO_SSL_REDIRECT=true: /healthz answers 200 over
    plain HTTP while a page is redirected to HTTPS."""
    import time
    import urllib.error
    import urllib.request

    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    script = compose["services"]["web"]["healthcheck"]["test"][-1]
    port = _free_port()
    assert "http://127.0.0.1:8000/healthz" in script
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    env = _env(**{**PRODUCTION, "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1"}, DJANGO_SSL_REDIRECT="true",
               DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    env.pop("REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "reviewdesk.wsgi:application", "--bind",
                               f"127.0.0.1:{port}", "--workers", "1"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
            if check.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(0.5)
        assert check.returncode == 0, check.stderr

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        request = urllib.request.Request(f"http://127.0.0.1:{port}/accounts/login/", headers={"Host": "localhost"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.build_opener(NoRedirect).open(request, timeout=10)
        assert answer.value.code == 301 and answer.value.headers["Location"] == "https://localhost/accounts/login/"
    finally:
        server.terminate()
        server.wait(timeout=30)
