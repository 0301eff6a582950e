"""What the API tells its operators about itself: an access log line per request — who (the
token's name, never the token), what (method, path, query), the outcome and how long it took —
so a department's reads of another's data can be audited; and Prometheus metrics on /metrics.

A plain ASGI middleware rather than Starlette's BaseHTTPMiddleware, which would buffer the
event stream (/stream) it wraps.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access = logging.getLogger("citysense.api.access")

PRINCIPAL = "citysense.principal"  # where authentication leaves the token's name in the scope


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "citysense_api_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "citysense_api_request_seconds",
            "Time to the start of the response, by route template",
            ["route"],
            registry=self.registry,
        )
        self.gc_pauses = Histogram(
            "citysense_api_gc_pause_seconds",
            "Python's cyclic garbage collections, each holding every request and live event "
            "up, by generation",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.cut = Counter(
            "citysense_api_answers_cut",
            "Answers that failed after they began (counted once, by their status, in requests)",
            ["route"],
            registry=self.registry,
        )
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self.gc_pauses.labels(str(info["generation"])).observe(pause)

    def watch_gc(self) -> None:
        """Time every collection from now on, until `unwatch_gc`."""
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        answered = False  # the response began: recorded then, with its status
        finished = False  # ... and its last part was sent

        async def sending(message: Message) -> None:
            nonlocal status, answered, finished
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            if message["type"] == "http.response.start":
                answered = True
                status = int(message["status"])
                seconds = time.perf_counter() - started
                self._record(scope, status, seconds)
                # The whole request up to its answer (a JSON body is rendered by then), beside
                # any phases the route timed: the rest of what a client waits is the network.
                timing = (b"server-timing", f"app;dur={seconds * 1000:.1f}".encode())
                message = {**message, "headers": [*message.get("headers", ()), timing]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except ClientDisconnect:
            raise  # the client left: nothing of ours failed
        except Exception:
            if not answered:
                self._record(scope, status, time.perf_counter() - started)
            elif not finished:
                # A streamed answer cut short: recorded once already, when it began.
                self._cut(scope, status)
            raise

    def _cut(self, scope: Scope, status: int) -> None:
        self.metrics.cut.labels(_route(scope)).inc()
        fields = {**_fields(scope, status), "cut": True}
        message = "%s %s failed after its answer began (%d)"
        access.error(message, fields["method"], fields["path"], status, extra={"fields": fields})

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        fields = {**_fields(scope, status), "ms": round(seconds * 1000, 1)}
        route = _route(scope)
        self.metrics.requests.labels(route, fields["method"], str(status)).inc()
        self.metrics.seconds.labels(route).observe(seconds)
        access.info("%s %s %d", fields["method"], fields["path"], status, extra={"fields": fields})


def _route(scope: Scope) -> str:
    return str(getattr(scope.get("route"), "path", "unmatched"))


def _fields(scope: Scope, status: int) -> dict[str, Any]:
    """An access-log line's fields: who (the token's name, never the token) asked what."""
    return {
        "method": str(scope.get("method", "")),
        "path": scope.get("path", ""),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "status": status,
        "token": scope.get(PRINCIPAL),
    }


class RuntimeCollector(Collector):
    """Gauges read from the running API at scrape time."""

    def __init__(self, read: Any) -> None:
        self._read = read  # () -> dict[name, (help, value)], empty before the lifespan ran

    def collect(self) -> Iterator[Metric]:
        for name, (text, value) in self._read().items():
            yield GaugeMetricFamily(f"citysense_api_{name}", text, value=value)
