"""`citysense schema`: InfluxDB's accounts and the database's shape, as its admin (the compose
stack's one-shot `influxdb-init`; `citysense up` and ingest do the shape part themselves).

With authentication on, InfluxDB 1.x lets the first admin be created without credentials; this
command does that from the admin's secret, then gives each service an account of its own with
only what it needs: ingest WRITE, the API READ and WRITE (its alarm events), Grafana READ.
Passwords are set again on every run, so a rotated secret file takes effect at the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from common.errors import ConfigError, InfluxRejected
from common.influx import InfluxClient, InfluxConfig, quote_ident
from common.schema import ensure_schema, withdraw_rows_whole
from common.settings import CommonSettings

GRANTS = {"ingest": "WRITE", "api": "ALL", "grafana": "READ"}
# What `citysense secrets` generates; anything else could end the string literal below.
_PASSWORD = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class SchemaSettings(CommonSettings):
    # The folder of the password files `citysense secrets` wrote (influx_<account>_password).
    passwords_dir: Path = Path("/run/secrets")

    def password(self, account: str) -> str:
        path = self.passwords_dir / f"influx_{account}_password"
        if not path.is_file():
            raise ConfigError(f"secret file {path} missing")
        return _secret(path.read_text().strip(), path.name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-users", action="store_true", help="only the database's shape")
    parser.add_argument(
        "--readings-imported",
        action="store_true",
        help="readings were written by other means (an import, a restore of the readings "
        "alone): the API's next start reads them in full rather than from the latest rows",
    )


def main(args: argparse.Namespace) -> int:
    settings = SchemaSettings()
    profiles, _ = settings.load_contract()
    config = settings.influx
    if not args.no_users:
        config = _as_admin(settings)
        with InfluxClient(config) as client:
            _accounts(client, settings)
    with InfluxClient(config) as client:
        report = ensure_schema(client, settings.retention, profiles)
        if args.readings_imported:
            withdraw_rows_whole(client)
    created, altered = list(report.created), list(report.altered)
    print(f"database {settings.influx_db}: created {created}, altered {altered}")
    if args.readings_imported:
        print("latest rows: not whole until the API's next full load from the readings")
    elif report.rows_whole:
        print("latest rows: whole (no readings yet; every writer keeps rows from the first)")
    return 0


def _secret(value: str, what: str) -> str:
    if not _PASSWORD.match(value):
        raise ConfigError(f"{what}: 16-128 letters, digits, '-' or '_' (see `citysense secrets`)")
    return value


def _as_admin(settings: SchemaSettings) -> InfluxConfig:
    password = settings.password("admin")
    parts = urlsplit(settings.influx_url)
    netloc = f"admin:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    base = settings.influx
    url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    # The first admin, while InfluxDB has no user yet. Refused (401) once an admin exists; the
    # admin login that follows checks it is ours.
    anonymous = InfluxConfig(url=settings.influx_url, database=base.database)
    with InfluxClient(anonymous) as bare, contextlib.suppress(InfluxRejected):
        bare.query(f"CREATE USER admin WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
    return InfluxConfig(url=url, database=base.database, timeout=base.timeout)


def _accounts(client: InfluxClient, settings: SchemaSettings) -> None:
    client.create_database()
    users = {str(r["user"]) for s in client.query("SHOW USERS")[0] for r in s.rows()}
    db = quote_ident(settings.influx_db)
    for name, grant in GRANTS.items():
        password = settings.password(name)
        verb = "SET PASSWORD FOR" if name in users else "CREATE USER"
        joiner = " =" if name in users else " WITH PASSWORD"
        client.query(f"{verb} {quote_ident(name)}{joiner} '{password}'")
        client.query(f"GRANT {grant} ON {db} TO {quote_ident(name)}")
