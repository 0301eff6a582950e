"""`mqtt://[user:pass@]host:port` as used by CITYSENSE_MQTT_URL."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from common.errors import ConfigError

DEFAULT_PORT = 1883


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme != "mqtt":
            raise ConfigError(f"MQTT URL must start with mqtt:// (got scheme {parts.scheme!r})")
        if not parts.hostname:
            raise ConfigError("MQTT URL has no host")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise ConfigError(f"MQTT URL has a bad port: {exc}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def redacted(self) -> str:
        """The URL fit for a log line: the password never appears."""
        user = f"{self.username}:***@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"
