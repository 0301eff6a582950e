"""The `citysense` command: up, ingest, api, rollups, simulate, profiles, replay, tokens, devices,
certs, broker, secrets, schema.

Each subcommand's module is imported only when it runs, so `citysense ingest` never loads the API
and the three parts stay independent. An expected failure (a setting, the contract, InfluxDB or
the broker) ends as one clear line on stderr and a non-zero status, never a traceback; the line
never carries a password from a URL.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence

from common import __version__
from common.errors import CitySenseError, ConfigError
from device_profiles import ContractError

# subcommand → (module providing add_arguments(parser) and main(args), help)
COMMANDS = {
    "up": ("citysense.up", "start everything locally: servers, ingest, API and a simulated city"),
    "ingest": ("ingest.cli", "run an ingest worker (MQTT → InfluxDB)"),
    "api": ("api.cli", "serve the HTTP API"),
    "rollups": ("api.keeper_cli", "keep the rollups across devices the API serves"),
    "simulate": ("simulators.cli", "publish a simulated fleet of devices"),
    "profiles": ("citysense.profiles", "check device profiles and the registry"),
    "replay": ("ingest.replay", "re-ingest dead letters after a profile or registry fix"),
    "tokens": ("citysense.tokens", "create, list and revoke the API's tokens"),
    "devices": ("citysense.devices", "add, import, rotate, revoke and list device credentials"),
    "certs": ("citysense.certs", "create the broker's TLS certificate authority and certificate"),
    "broker": ("citysense.broker", "render the broker's config and run Mosquitto (compose)"),
    "secrets": ("citysense.secrets", "generate every secret the compose stack reads"),
    "schema": ("citysense.schema", "InfluxDB's accounts, retention policies and roll-ups"),
    "evaluate": ("citysense.evaluate", "score the foresight signals on a simulated month"),
}
# A password in a URL (scheme://user:password@host) is masked in any message we print.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citysense",
        description="CitySense: IoT urban-sensing ingestion. Settings come from CITYSENSE_* "
        "environment variables or a .env file.",
    )
    parser.add_argument("--version", action="version", version=f"citysense {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module)
        if name == chosen:  # only the command that runs gets imported
            importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    try:
        result: int = importlib.import_module(args.module).main(args)
    except (ConfigError, ContractError) as exc:
        return _fail(args.command, exc, 2)
    except CitySenseError as exc:
        return _fail(args.command, exc, 1)
    return result


def _fail(command: str, exc: Exception, status: int) -> int:
    text = " ".join(str(exc).split())  # one line, whatever the message held
    masked = _URL_PASSWORD.sub(r"\g<head>***@", text)
    print(f"citysense {command}: {masked}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
