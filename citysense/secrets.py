"""`citysense secrets --out DIR`: every secret the compose stack reads, generated once.

One file per secret (compose mounts each under /run/secrets, where the services' settings read
them: CITYSENSE_SECRETS_DIR). The folder is its owner's only (0700); the files in it are
readable (0644) because compose bind-mounts each one into containers that run as their own
non-root user, which would otherwise be refused them. Files that exist are kept, so running
it again after adding a host name or losing one file regenerates only what is missing; rotating
a secret is deleting its file and running this again (and restarting what uses it). Nothing here
ends up in the image or in the compose file.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from pathlib import Path

from citysense.certs import DEFAULT_HOSTS, TlsFiles, ensure
from common.files import replace_whole

MQTT_ACCOUNTS = ("admin", "ingest", "api", "simulator", "sta")
INFLUX_ACCOUNTS = ("admin", "ingest", "api", "grafana")
# The services' connection URLs: each holds its own account's password.
MQTT_INTERNAL = "mqtt://citysense-{name}:{password}@mosquitto:1883"
MQTT_TLS = "mqtts://citysense-{name}:{password}@mosquitto:8883?ca=/run/secrets/ca.crt"
INFLUX_URL = "http://{name}:{password}@influxdb:8086"
TOKENS_FOLDER = "tokens"  # the API's tokens file: its hashes only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the secret files")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name devices reach the broker by, for its certificate (repeatable)",
    )


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    written = generate(out, tuple(args.host))
    tls = ensure(TlsFiles(out), (*DEFAULT_HOSTS, *args.host))
    written += _operator_env(out, args.host[0] if args.host else "localhost")
    # The broker's container runs as its own user and gets the key bind-mounted as it is here:
    # readable like every other secret of this folder, which only its owner may enter. (Left
    # 0600, the broker could not open it and the stack never came up.) Its CA's key is never
    # mounted, and stays 0600.
    tls.key.chmod(0o644)
    for name in written:
        print(f"wrote {out / name}")
    _operator_token(out)
    return 0


def generate(out: Path, hosts: tuple[str, ...] = ()) -> list[str]:
    """Every password and URL file missing in `out`; the names written."""
    written = []
    for name in MQTT_ACCOUNTS:
        written += _keep(out, f"mqtt_{name}_password", secrets.token_urlsafe(24))
    for name in INFLUX_ACCOUNTS:
        written += _keep(out, f"influx_{name}_password", secrets.token_urlsafe(24))
    written += _keep(out, "grafana_admin_password", secrets.token_urlsafe(24))
    for name in ("ingest", "api"):
        password = _read(out, f"mqtt_{name}_password")
        written += _keep(
            out, f"{name}_mqtt_url", MQTT_INTERNAL.format(name=name, password=password)
        )
    for name in ("admin", "simulator"):  # from outside the stack: over TLS
        password = _read(out, f"mqtt_{name}_password")
        written += _keep(out, f"{name}_mqtt_url", MQTT_TLS.format(name=name, password=password))
    for name in ("admin", "ingest", "api"):
        password = _read(out, f"influx_{name}_password")
        written += _keep(out, f"{name}_influx_url", INFLUX_URL.format(name=name, password=password))
    return written


def _operator_env(out: Path, host: str) -> list[str]:
    """`operator.env`: what `citysense devices` needs on the host the stack runs on, where the
    services' own URLs do not work (their broker is `mosquitto`, their CA under /run/secrets,
    their registry mounted): the admin account over TLS at `host`, this folder's CA, and the
    registry beside it (deploy/registry, mounted into the services as a folder)."""
    password = _read(out, "mqtt_admin_password")
    folder = out.resolve()
    url = f"mqtts://citysense-admin:{password}@{host}:8883?ca={folder / 'ca.crt'}"
    text = (
        "# For `citysense devices` on this host: set -a; . deploy/secrets/operator.env; set +a\n"
        f"CITYSENSE_MQTT_ADMIN_URL='{url}'\n"
        f"CITYSENSE_REGISTRY='{folder.parent / 'registry' / 'registry.csv'}'\n"
        "CITYSENSE_TOPIC_ROOT=city\n"
    )
    return _keep(out, "operator.env", text.rstrip("\n"))


def _operator_token(out: Path) -> None:
    """A city-wide token for the operator, unless the tokens file is there: shown (flushed)
    before its hash is written, so that a crash between the two leaves no hash of a token
    nobody saw (the next run makes another), only a token that never worked. The file is in a
    folder of its own, which the API's container mounts: `citysense tokens` replaces the file,
    and a file mounted alone would stay the old one there. A file an older version left beside
    the secrets is moved into it."""
    folder = out / TOKENS_FOLDER
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)  # entered by the API's container user
    path = folder / "api_tokens.yaml"
    if path.exists():
        return
    if (out / "api_tokens.yaml").exists():
        (out / "api_tokens.yaml").replace(path)
        # Readable by the API's container user (hashes only): `citysense tokens` wrote it 0600.
        path.chmod(0o644)
        print(f"moved {out / 'api_tokens.yaml'} to {path}")
        return
    token = "cst_" + secrets.token_urlsafe(32)
    print(f"API operator token (shown once; its hash goes into {path}):")
    print(token, flush=True)
    digest = hashlib.sha256(token.encode()).hexdigest()
    _write(path, f"tokens:\n  - {{name: operator, sha256: {digest}, scope: city}}\n")


def _keep(out: Path, name: str, value: str) -> list[str]:
    if (out / name).exists():
        return []
    _write(out / name, value + "\n")
    return [name]


def _read(out: Path, name: str) -> str:
    return (out / name).read_text().strip()


def _write(path: Path, text: str) -> None:
    # Whole or not at all: a file left empty by a crash would be kept (it exists) as a secret.
    replace_whole(path, text.encode(), mode=0o644)
