"""The worker's own small HTTP endpoint: /metrics (Prometheus), /ready, /live, and
/unknown-fields (fields devices send that their profile does not declare, ingest.unknown).

Served by common.observe (standard library only, in a daemon thread): it must keep answering
while the pipeline is busy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from common import observe
from common.observe import PROMETHEUS_TEXT, Answer

log = logging.getLogger(__name__)


class ObserveServer(observe.ObserveServer):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[], str],
        ready: Callable[[], bool],
        unknown_fields: Callable[[], object] | None = None,
    ) -> None:
        def readiness() -> Answer:
            ok = ready()
            return (200, "ready\n", "text/plain") if ok else (503, "not ready\n", "text/plain")

        routes: dict[str, Callable[[], Answer]] = {
            "/metrics": lambda: (200, metrics(), PROMETHEUS_TEXT),
            "/ready": readiness,
            "/live": lambda: (200, "live\n", "text/plain"),
        }
        if unknown_fields is not None:
            routes["/unknown-fields"] = lambda: (
                200,
                orjson.dumps(unknown_fields()),
                "application/json",
            )
        super().__init__(host, port, routes, thread_name="citysense-observe", log=log)
