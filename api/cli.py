"""`citysense api`: serve the HTTP API with uvicorn.

Settings come from CITYSENSE_* variables (see api.settings and citysense.settings); the options
here override the listening address only.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys

import uvicorn
from pydantic import ValidationError

from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.tokens import TokenBook
from api.main import create_app
from common.errors import ConfigError
from common.logs import configure
from common.settings import settings_problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default CITYSENSE_API_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default CITYSENSE_API_PORT)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (default info)",
    )


def main(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 after a clean shutdown, 2 on bad settings. A contract that does
    not load stops startup: uvicorn logs why and exits with its startup-failure status (3)."""
    overrides = {
        name: value
        for name, value in (("api_host", args.host), ("api_port", args.port))
        if value is not None
    }
    try:
        settings = ApiSettings(**overrides)
    except ValidationError as exc:
        problems = settings_problems(exc)
        print(f"citysense api: invalid settings:\n{problems}", file=sys.stderr)
        return 2
    # No cyclic collection until the start's load is done (api.main re-enables it): the
    # registry and the state are hundreds of thousands of objects built at once, which set off
    # collections walking all of them again and again; a start from two workers' latest rows at
    # 100,000 devices served 0.5 s sooner (5.2 -> 4.7 s, measured). Nothing they build is
    # garbage in a cycle worth collecting early.
    gc.disable()
    contract = _checked_contract(settings)
    # JSON lines like ingest's; httpx (whose request lines carry URLs, which may carry
    # credentials) kept to warnings. The access log is ours (api.observe), with the token's name.
    configure(args.log_level.upper())
    server: uvicorn.Server | None = None
    failed = False

    def stop_on_failure() -> None:
        # A background task or thread died (logged): stop serving and exit non-zero, so that
        # the process supervisor (compose, systemd, `citysense up`) restarts the API.
        nonlocal failed
        failed = True
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(
        functools.partial(create_app, settings, on_failure=stop_on_failure, contract=contract),
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        log_level=args.log_level,
        log_config=None,  # our handlers (JSON), not uvicorn's
        access_log=False,  # api.observe writes the access log, with the token's name
        timeout_graceful_shutdown=settings.api_shutdown_grace,
    )
    server = uvicorn.Server(config)
    server.run()
    if failed:
        return 1
    return 0 if server.started else 3


def _checked_contract(settings: ApiSettings) -> Contract:
    """What would stop the app's start, said before uvicorn runs: one line from the command
    (citysense.cli), rather than a traceback from inside the server's lifespan. The contract
    loaded here is the app's: it is not loaded twice."""
    profiles, registry = settings.load_contract()
    contract = Contract.build(profiles, registry)
    if settings.api_auth == "off":
        return contract
    if settings.api_tokens is None:
        raise ConfigError(
            "no tokens file: set CITYSENSE_API_TOKENS (create one with `citysense tokens new`), "
            "or CITYSENSE_API_AUTH=off for a development deployment"
        )
    TokenBook(settings.api_tokens, profiles, registry.districts)
    return contract
