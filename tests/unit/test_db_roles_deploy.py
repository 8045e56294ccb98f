"""docker-compose.yml runs the app as the runtime role and gives the owner's URL to the one-shot
migrate service alone (docs/OPERATIONS.md "Database roles")."""
from pathlib import Path

import dj_database_url
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_only_the_migrate_service_holds_the_owner_url():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    migrate = services["migrate"]
    owner = dj_database_url.parse(migrate["environment"]["DATABASE_MIGRATE_URL"])
    runtime = dj_database_url.parse(migrate["environment"]["DATABASE_URL"])
    assert owner["NAME"] == runtime["NAME"] and owner["USER"] != runtime["USER"]
    assert migrate["restart"] == "no"  # one-shot: a restart policy would run it in a loop
    assert "setup_db_roles" in migrate["command"] and "migrate --noinput" in migrate["command"]
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert not environment["DATABASE_MIGRATE_URL"], f"{name} must not hold the owner's URL"
        assert dj_database_url.parse(environment["DATABASE_URL"])["USER"] == runtime["USER"], name
        assert "migrate" not in str(services[name]["command"]), f"{name} must not migrate (it cannot)"
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    superuser = services["postgres"]["environment"]["POSTGRES_USER"]
    assert superuser not in {owner["USER"], runtime["USER"]}
