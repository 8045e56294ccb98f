"""The deployment files keep their contracts (Docker is not available here to run them)."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _settings_variables() -> set[str]:
    source = (ROOT / "reviewdesk" / "settings.py").read_text()
    return set(re.findall(r'env_(?:str|bool|int|float|list)\(\s*"([A-Z0-9_]+)"', source))


def test_every_variable_the_settings_read_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    variables = _settings_variables()
    assert {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "DJANGO_SECRET_KEY"} <= variables
    assert variables - documented == set()


def test_compose_runs_the_five_services_in_health_order():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"web", "worker", "beat", "postgres", "redis"}
    for name in ("web", "postgres", "redis"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        for backing in ("postgres", "redis"):
            assert depends[backing]["condition"] == "service_healthy", f"{name} -> {backing}"
    assert "gunicorn" in str(services["web"]["command"])
    assert "worker" in str(services["worker"]["command"]) and "beat" in str(services["beat"]["command"])


def test_compose_passes_every_settings_variable_through():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["web"]["environment"]
    assert _settings_variables() - set(environment) == set()


def _seconds(value) -> float:
    """A Compose duration ("330s", "5m", "1m30s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"unreadable duration {value!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * scale[u] for n, u in parts)


def _default(name: str) -> int:
    match = re.search(rf'env_int\(\s*"{name}",\s*(\d+)', (ROOT / "reviewdesk" / "settings.py").read_text())
    assert match, name
    return int(match.group(1))


def test_deploy_grace_periods_let_running_work_finish():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker, web = services["worker"], services["web"]
    # The worker's warm shutdown (SIGTERM) waits for its running drafts; Docker must wait at least
    # as long as one draft may take (the task time limit), with room to store the result.
    assert worker["stop_signal"] == "SIGTERM"
    assert _seconds(worker["stop_grace_period"]) >= _default("REVIEWDESK_TASK_TIME_LIMIT") + 30
    # gunicorn's graceful shutdown finishes requests in flight within --graceful-timeout; Docker's
    # grace must be longer, and a request may not outlive gunicorn's own --timeout.
    command = str(web["command"])
    graceful = int(re.search(r"--graceful-timeout[ =](\d+)", command).group(1))
    timeout = int(re.search(r"--timeout[ =](\d+)", command).group(1))
    assert web["stop_signal"] == "SIGTERM"
    assert graceful < _seconds(web["stop_grace_period"]) and graceful <= timeout
    # Idle connections outlive every poll of the pages (hx-trigger "every 2s" / "every 15s"):
    # the server never closes one just as a poll is sent on it.
    keep_alive = int(re.search(r"--keep-alive[ =](\d+)", command).group(1))
    triggers = [t for path in (ROOT / "templates").rglob("*.html")
                for t in re.findall(r'hx-trigger="([^"]*every[^"]*)"', path.read_text())]
    polls = {int(n) for t in triggers for n in re.findall(r"(\d+)s\b", t)}
    assert polls and keep_alive > max(polls)
    # A worker killed anyway is taken over by the heartbeat sweep within a minute.
    assert _default("REVIEWDESK_HEARTBEAT_STALE_SECONDS") + _default("REVIEWDESK_SWEEP_SECONDS") <= 60
    assert _default("REVIEWDESK_HEARTBEAT_STALE_SECONDS") >= 3 * _default("REVIEWDESK_HEARTBEAT_SECONDS")
