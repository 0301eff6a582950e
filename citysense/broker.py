"""The broker's configuration, rendered from citysense/conf/mosquitto.conf, and `citysense broker`.

One renderer for every way the broker runs: `citysense up` and the test fixtures (through
citysense.servers) and the compose stack's `mosquitto` service, which runs `citysense broker`:
render, then become Mosquitto (exec), so the container's process is the broker itself and
receives its stop signal directly.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from citysense import dynsec
from citysense.certs import DEFAULT_HOSTS, TlsFiles, ensure
from citysense.programs import find_binary
from common.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
ACCOUNTS = (dynsec.ADMIN, *dynsec.SERVICES)


@dataclass
class BrokerLayout:
    """Where one broker keeps its files and how it listens."""

    home: Path
    host: str
    port: int
    tls_host: str
    tls_port: int
    root: str = "city"
    tls: TlsFiles | None = None  # default: home/tls, generated when missing
    max_queued_messages: int = 8_000_000
    max_queued_bytes: int = 4 * 1024**3
    max_inflight_messages: int = 65_535
    # Seconds between saves of the persistence file: what a crash (SIGKILL) can lose at most.
    autosave_interval: int = 10
    tls_hosts: tuple[str, ...] = field(default=DEFAULT_HOSTS)
    log_to_stdout: bool = False  # in a container; a file otherwise

    @property
    def conf_file(self) -> Path:
        return self.home / "mosquitto.conf"

    @property
    def dynsec_file(self) -> Path:
        return self.home / "dynamic-security.json"

    @property
    def log_file(self) -> Path:
        return self.home / "mosquitto.log"

    @property
    def tls_files(self) -> TlsFiles:
        return self.tls or TlsFiles(self.home / "tls")

    def render(
        self, passwords: Mapping[str, str], devices: Iterable[dynsec.DeviceAccount] = ()
    ) -> Path:
        """Write the config and the accounts file; the broker's config file's path."""
        missing = [a for a in ACCOUNTS if not passwords.get(a)]
        if missing:
            raise ConfigError(f"broker: no password for {', '.join(missing)}")
        data_dir = self.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        tls = self.tls_files if self.tls else ensure(self.tls_files, self.tls_hosts)
        if not tls.complete():
            raise ConfigError(f"broker: TLS files missing in {tls.folder} (see `citysense certs`)")
        dynsec.broker_file(self.dynsec_file, self.root, passwords, devices)
        conf = (
            (CONF_DIR / "mosquitto.conf")
            .read_text()
            .format(
                user=getpass.getuser(),
                host=self.host,
                port=self.port,
                tls_host=self.tls_host,
                tls_port=self.tls_port,
                cafile=tls.ca_cert,
                certfile=tls.cert,
                keyfile=tls.key,
                plugin=dynsec.find_plugin(),
                dynsec_file=self.dynsec_file,
                data_dir=data_dir,
                log_dest="stdout" if self.log_to_stdout else f"file {self.log_file}",
                max_queued_messages=self.max_queued_messages,
                max_queued_bytes=self.max_queued_bytes,
                max_inflight_messages=self.max_inflight_messages,
                autosave_interval=self.autosave_interval,
            )
        )
        self.conf_file.write_text(conf)
        return self.conf_file


# --- `citysense broker` (the compose stack's mosquitto service) --------------------------------


class BrokerSettings(BaseSettings):
    """The broker's settings; each account's password is a file (a compose secret)."""

    model_config = SettingsConfigDict(env_prefix="CITYSENSE_BROKER_", extra="ignore")

    home: Path = Path("/var/lib/citysense/mosquitto")
    # Inside the container: its interface on the stack's private network. The compose file
    # publishes only the TLS port to the host, so plain MQTT never leaves that network.
    listen: str = "0.0.0.0"  # noqa: S104
    port: int = Field(default=1883, gt=0, lt=65536)
    tls_port: int = Field(default=8883, gt=0, lt=65536)
    tls_dir: Path = Path("/run/secrets/tls")
    passwords_dir: Path = Path("/run/secrets")
    # The root every other service reads (CITYSENSE_TOPIC_ROOT), unless the broker is told its
    # own: the accounts' permissions are on it, and a root changed for the services alone had
    # ingest's subscription refused.
    topic_root: str = Field(
        default="city",
        validation_alias=AliasChoices("CITYSENSE_BROKER_TOPIC_ROOT", "CITYSENSE_TOPIC_ROOT"),
    )

    def passwords(self) -> dict[str, str]:
        found = {}
        for account in ACCOUNTS:
            path = self.passwords_dir / f"mqtt_{account.removeprefix('citysense-')}_password"
            if not path.is_file():
                raise ConfigError(f"broker: secret file {path} missing")
            found[account] = path.read_text().strip()
        return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--render-only", action="store_true", help="write the config and stop (for checks)"
    )


def main(args: argparse.Namespace) -> int:
    settings = BrokerSettings()
    layout = BrokerLayout(
        home=settings.home,
        host=settings.listen,
        port=settings.port,
        tls_host=settings.listen,
        tls_port=settings.tls_port,
        root=settings.topic_root,
        tls=TlsFiles(settings.tls_dir),
        log_to_stdout=True,
    )
    conf = layout.render(settings.passwords())
    if args.render_only:
        print(conf)
        return 0
    binary = find_binary("mosquitto", "CITYSENSE_MOSQUITTO_BIN")
    os.execv(binary, [binary, "-c", str(conf)])  # noqa: S606 - a fixed binary, no shell
    return 1  # not reached: exec replaced this process
