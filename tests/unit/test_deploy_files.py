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
