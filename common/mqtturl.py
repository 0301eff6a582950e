"""`mqtt://` or `mqtts://[user:pass@]host[:port][?ca=/path/ca.pem]` as used by CITYSENSE_MQTT_URL.

`mqtts` is MQTT over TLS: the broker's certificate is checked against `ca` (the deployment's own
certificate authority, see `citysense certs`) or, without it, against the system's trust store.
Hostname checking is never turned off: a certificate issued for another name is refused.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt

from common.errors import ConfigError
from common.urls import check_user_info

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
SCHEMES = {"mqtt": False, "mqtts": True}


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        check_user_info(url, "MQTT URL")
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ConfigError(
                f"MQTT URL must start with mqtt:// or mqtts:// (got scheme {parts.scheme!r})"
            )
        tls = SCHEMES[parts.scheme]
        if not parts.hostname:
            raise ConfigError("MQTT URL has no host")
        try:
            port = parts.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
        except ValueError as exc:
            raise ConfigError(f"MQTT URL has a bad port: {exc}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=_ca_file(parts.query, tls),
        )

    def redacted(self) -> str:
        """The URL fit for a log line: the password never appears."""
        user = f"{self.username}:***@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{self.host}:{self.port}"

    def configure(self, client: mqtt.Client) -> None:
        """Credentials and TLS of this URL on a paho client, before it connects."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set_context(self.ssl_context())

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def _ca_file(query: str, tls: bool) -> Path | None:
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"ca"})
    if unknown:
        raise ConfigError(f"MQTT URL has unknown options {unknown}; the only one is ?ca=<file>")
    values = options.get("ca", [])
    if not values:
        return None
    if not tls:
        raise ConfigError("MQTT URL: ?ca= needs mqtts:// (TLS)")
    if len(values) > 1 or not values[0]:
        raise ConfigError("MQTT URL: give ?ca= once, with a file")
    path = Path(values[0])
    if not path.is_file():
        raise ConfigError(f"MQTT URL: CA file {path} not found")
    return path
