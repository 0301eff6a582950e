"""Errors CitySense raises at its boundaries with InfluxDB, the MQTT broker and its own files.

Errors from the lower libraries (httpx, paho, socket) are translated once, where they happen,
into this tree, so callers decide on meaning (retry or not) rather than on library types:

    CitySenseError
    ├── ConfigError              - a setting is missing or malformed
    │   └── SpoolInUse           - another process holds the spool folder (one client id twice)
    ├── InfluxError
    │   ├── InfluxUnavailable    - retryable: refused, timeout, 5xx, 429 (carries retry_after)
    │   └── InfluxRejected       - permanent: 4xx; the request itself is wrong
    │       ├── InfluxPartialWrite   - 400 (1.x) or 422 (2.x) on /write; some lines stored,
    │       │                              `dropped` were not
    │       └── InfluxNotFound       - 404, or a query or write of a database or policy not there
    ├── BrokerError              - the MQTT broker refused us or could not be reached
    │   ├── BrokerRefused        - it answered, and said no (a login, a dynamic-security command)
    │   └── BrokerUnanswered     - commands sent, no answer in time: it may have done them
    └── FileNotWritten           - a file we keep (registry, tokens, keys) could not be replaced
                                   (a full disk, no permission): the old one is as it was
"""

from __future__ import annotations


class CitySenseError(Exception):
    """Base of every error CitySense raises on purpose."""


class ConfigError(CitySenseError, ValueError):
    pass


class SpoolInUse(ConfigError):
    pass


class InfluxError(CitySenseError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InfluxUnavailable(InfluxError):
    """Worth retrying later: the server is down, overloaded or asked us to wait."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class InfluxRejected(InfluxError):
    """Never worth retrying as is: the same request will fail the same way."""


class InfluxPartialWrite(InfluxRejected):
    def __init__(self, message: str, *, dropped: int | None, status: int = 400) -> None:
        super().__init__(message, status=status)
        self.dropped = dropped


class InfluxNotFound(InfluxRejected):
    pass


class BrokerError(CitySenseError):
    pass


class BrokerRefused(BrokerError):
    pass


class BrokerUnanswered(BrokerError):
    pass


class FileNotWritten(CitySenseError):
    """common.files.replace_whole could not write its file; the file it would have replaced, if
    any, is unchanged and no temporary file is left."""
