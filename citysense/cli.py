"""The `citysense` command: up, ingest, api, simulate, profiles check.

Each subcommand's module is imported only when it runs, so `citysense ingest` never loads the API
and the three parts stay independent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand → (module providing add_arguments(parser) and main(args), help)
COMMANDS = {
    "up": ("citysense.up", "start everything locally: servers, ingest, API and a simulated city"),
    "ingest": ("ingest.cli", "run an ingest worker (MQTT → InfluxDB)"),
    "api": ("api.cli", "serve the HTTP API"),
    "simulate": ("simulators.cli", "publish a simulated fleet of devices"),
    "profiles": ("citysense.profiles", "check device profiles and the registry"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citysense",
        description="CitySense: IoT urban-sensing ingestion. Settings come from CITYSENSE_* "
        "environment variables or a .env file.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(command)
        command.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = importlib.import_module(args.module).main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
