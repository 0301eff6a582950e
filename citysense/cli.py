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
    "replay": ("ingest.replay", "re-ingest dead letters after a profile or registry fix"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citysense",
        description="CitySense: IoT urban-sensing ingestion. Settings come from CITYSENSE_* "
        "environment variables or a .env file.",
    )
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
    result: int = importlib.import_module(args.module).main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
