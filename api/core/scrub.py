"""Secrets masked out of every text that leaves the process: an error text from a library may
quote a URL or a header, and a 503 body or a log line must never carry a password."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from api.core.settings import ApiSettings

MASK = "***"


def secrets_of(settings: ApiSettings) -> tuple[str, ...]:
    """Every secret the settings hold, longest first so no secret is masked only partly."""
    found: list[str] = []
    if settings.influx_token is not None:
        found.append(settings.influx_token.get_secret_value())
    if settings.mqtt.password:
        found.append(settings.mqtt.password)
    if settings.api_state_peer_token is not None:
        found.append(settings.api_state_peer_token.get_secret_value())
    for url in (settings.influx_url, settings.api_state_peer or ""):
        password = urlsplit(url).password
        if password:
            found.append(password)
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


class Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
