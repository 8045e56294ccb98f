#!/usr/bin/env python3
"""Check that everything the test suite needs is there before pytest starts.

The tests run against a real PostgreSQL, a real Redis and a real browser (Debian's chromium),
and none of them is ever skipped. When one is missing, this script says which one, where it
looked, and the command that fixes it, then exits 1, instead of letting pytest fail somewhere
deep inside a fixture.

Environment (same defaults as `make test`):
  DATABASE_URL          postgres://postgres@127.0.0.1:5432/test
  REDIS_URL             redis://127.0.0.1:6379/15
  REVIEWDESK_CHROMIUM   /usr/bin/chromium
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 3  # seconds, per connection attempt

PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port {port} --save "" --appendonly no'
CHROMIUM_INSTALL = "apt-get install -y chromium"


def redact(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def tcp_reachable(host: str, port: int) -> str | None:
    """None if a TCP connection opens within the timeout, else the reason it did not."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            return None
    except OSError as exc:
        return str(exc) or exc.__class__.__name__


def check_postgres() -> list[str]:
    url = os.environ.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    shown = redact(url)
    scheme = urlsplit(url).scheme
    if scheme not in ("postgres", "postgresql"):
        return [
            f"PostgreSQL: DATABASE_URL={shown} is not a PostgreSQL URL.",
            "  The tests run against a real PostgreSQL; unset DATABASE_URL to use the default",
            f"  {DEFAULT_DATABASE_URL}, or point it at a PostgreSQL server.",
        ]

    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        return [f"PostgreSQL: DATABASE_URL={shown} cannot be parsed: {exc}"]
    host = str(params.get("host") or "localhost")
    port = int(params.get("port") or 5432)
    dbname = params.get("dbname") or params.get("user") or "postgres"
    user = params.get("user") or "(current OS user)"
    where = f"{host}:{port}" if not host.startswith("/") else f"socket {host} port {port}"

    if not host.startswith("/"):
        reason = tcp_reachable(host, port)
        if reason is not None:
            return [
                f"PostgreSQL is unreachable at {where} ({reason}).",
                f"  DATABASE_URL={shown}",
                f"  Start it with:  {PG_START}",
            ]
    try:
        with psycopg.connect(url, connect_timeout=TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = str(exc).strip().replace("\n", "\n    ")
        lines = [
            f"PostgreSQL at {where} refused the connection as user {user} to database {dbname}:",
            f"    {message}",
            f"  DATABASE_URL={shown}",
        ]
        if "does not exist" in message and "database" in message:
            lines.append(f"  Create the database with:  createdb -h {host} -p {port} -U {user} {dbname}")
        elif host.startswith("/") or "Connection refused" in message or "No such file" in message:
            lines.append(f"  Start it with:  {PG_START}")
        return lines
    return []


def check_redis() -> list[str]:
    url = os.environ.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return [
            f"Redis: REDIS_URL={shown} is not a Redis URL.",
            f"  The tests run against a real Redis; unset REDIS_URL to use the default {DEFAULT_REDIS_URL}.",
        ]
    try:
        port = parts.port or 6379
    except ValueError as exc:
        return [f"Redis: REDIS_URL={shown} has a bad port: {exc}"]
    host = parts.hostname or "localhost"
    where = parts.path if parts.scheme == "unix" else f"{host}:{port}"
    start = REDIS_START.format(port=port)

    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        client.ping()
        client.close()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return [
            f"Redis is unreachable at {where} ({exc}).",
            f"  REDIS_URL={shown}",
            f"  Start it with:  {start}",
        ]
    except (redis.RedisError, ValueError) as exc:
        return [
            f"Redis at {where} answered but the check failed: {exc.__class__.__name__}: {exc}",
            f"  REDIS_URL={shown}",
        ]
    return []


def check_chromium() -> list[str]:
    configured = os.environ.get("REVIEWDESK_CHROMIUM", "").strip()
    path = configured or DEFAULT_CHROMIUM
    source = f"REVIEWDESK_CHROMIUM={configured}" if configured else f"default path {DEFAULT_CHROMIUM}"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        lines = [f"chromium (for the browser tests) is missing: no executable at {path} ({source})."]
        if configured and configured != DEFAULT_CHROMIUM:
            lines.append("  Fix REVIEWDESK_CHROMIUM, or unset it and install Debian's chromium:")
        lines.append(f"  Install it with:  {CHROMIUM_INSTALL}")
        return lines
    # It exists; make sure it actually starts (an interrupted apt install leaves a broken one).
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [
            f"chromium at {path} does not run: {exc}",
            f"  Reinstall it with:  {CHROMIUM_INSTALL}",
        ]
    if result.returncode != 0 or "chrom" not in result.stdout.lower():
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return [
            f"chromium at {path} does not run (`--version` exit {result.returncode}: {detail[0]}).",
            f"  Reinstall it with:  {CHROMIUM_INSTALL}",
        ]
    return []


def main() -> int:
    checks = (("PostgreSQL", check_postgres), ("Redis", check_redis), ("chromium", check_chromium))
    problems: list[str] = []
    for name, check in checks:
        try:
            found = check()
        except Exception as exc:  # a crash in a check is a failed check, never a skip
            found = [f"{name}: the check itself failed: {exc.__class__.__name__}: {exc}"]
        if found:
            problems.append("\n".join(found))
    if problems:
        print("check_services: the test suite cannot run:\n", file=sys.stderr)
        print("\n\n".join(problems), file=sys.stderr)
        print("\n(Tests never skip a missing service; fix the above and run again.)", file=sys.stderr)
        return 1
    print("check_services: PostgreSQL, Redis and chromium are available.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
