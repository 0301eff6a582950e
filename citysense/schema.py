"""`citysense schema`: InfluxDB's accounts and the database's shape, as its admin (the compose
stack's one-shot `influxdb-init`; `citysense up` and ingest do the shape part themselves).

With authentication on, InfluxDB 1.x lets the first admin be created without credentials; this
command does that from the admin's secret, then gives each service an account of its own with
only what it needs: ingest WRITE, the API READ and WRITE (its alarm events), Grafana READ.
Passwords are set again on every run, so a rotated secret file takes effect at the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from api.core.contract import Contract
from api.core.scrub import Scrubber, secrets_of
from api.core.settings import ApiSettings
from api.live.rebuild import Built, build_rows
from common.errors import ConfigError, InfluxError, InfluxRejected
from common.influx import AsyncInfluxClient, InfluxClient, InfluxConfig, quote_ident
from common.schema import ensure_schema, withdraw_rows_whole
from common.settings import CommonSettings, settings_problems

# Ingest reads too: each worker reads its own latest rows back at start (ingest.latest), and
# `citysense replay` the dead letters. With WRITE alone that read was refused, so no worker of
# the compose stack kept rows, every write carried an owed mark, and every API start loaded
# every device from the readings. (InfluxDB 1.x grants per database, not per measurement.)
GRANTS = {"ingest": "ALL", "api": "ALL", "grafana": "READ"}
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
        "alone): the latest rows are built from the readings again",
    )
    parser.add_argument(
        "--skip-rows",
        action="store_true",
        help="do not build the latest rows from the readings when they are not whole: "
        "the API's next start reads the readings in full and builds them",
    )


def main(args: argparse.Namespace) -> int:
    settings = SchemaSettings()
    profiles, registry = settings.load_contract()
    config = settings.influx
    secrets: list[str] = []
    if not args.no_users:
        config = _as_admin(settings)
        secrets.append(settings.password("admin"))
        with InfluxClient(config) as client:
            _accounts(client, settings)
    with InfluxClient(config) as client:
        report = ensure_schema(client, settings.retention, profiles)
        if args.readings_imported:
            withdraw_rows_whole(client)
    created, altered = list(report.created), list(report.altered)
    print(f"database {settings.influx_db}: created {created}, altered {altered}")
    if report.rows_whole and not args.readings_imported:
        print("latest rows: whole (no readings yet; every writer keeps rows from the first)")
    elif args.skip_rows:
        print("latest rows: not built here (--skip-rows): the API's next start reads the readings")
    else:
        _build_rows(config, Contract.build(profiles, registry), secrets)
    return 0


def _build_rows(config: InfluxConfig, contract: Contract, secrets: list[str]) -> None:
    """The latest rows built from the readings if they are not whole (api.live.rebuild). A
    failure is said and leaves them to the API's first start, which builds them the same way:
    the database's shape, this command's job, is done."""
    try:
        api = ApiSettings()
    except ValidationError as exc:
        raise ConfigError(f"invalid settings:\n{settings_problems(exc)}") from exc
    scrub = Scrubber([*secrets, *secrets_of(api)])

    async def build() -> Built:
        influx = AsyncInfluxClient(config)
        try:
            return await build_rows(api, contract, influx, scrub)
        finally:
            await influx.aclose()

    try:
        built = asyncio.run(build())
    except InfluxError as exc:
        print(
            f"latest rows: not built ({scrub(str(exc))}): the API's next start reads the "
            "readings in full and builds them",
            file=sys.stderr,
        )
        return
    if not built.needed:
        print("latest rows: whole")
    elif built.whole:
        print(
            f"latest rows: built from the newest readings of {built.devices} devices in "
            f"{built.seconds:.1f} s: whole"
        )
    else:
        print(
            f"latest rows: built from the newest readings of {built.devices} devices, but not "
            "whole: a writer stored readings without rows meanwhile (its `latest` policy "
            "missing); the API's next full load makes them whole"
        )


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
