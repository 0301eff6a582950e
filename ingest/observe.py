"""The worker's own small HTTP endpoint: /metrics (Prometheus), /ready, /live, and
/unknown-fields (fields devices send that their profile does not declare, ingest.unknown).

Standard library only, in a daemon thread: it must keep answering while the pipeline is busy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

log = logging.getLogger(__name__)


class ObserveServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[], str],
        ready: Callable[[], bool],
        unknown_fields: Callable[[], object] | None = None,
    ) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    owner._send(self, 200, owner._metrics(), "text/plain; version=0.0.4")
                elif self.path == "/ready":
                    ok = owner._ready()
                    owner._send(self, 200 if ok else 503, "ready\n" if ok else "not ready\n")
                elif self.path == "/live":
                    owner._send(self, 200, "live\n")
                elif self.path == "/unknown-fields" and owner._unknown is not None:
                    body = orjson.dumps(owner._unknown()).decode()
                    owner._send(self, 200, body, "application/json")
                else:
                    owner._send(self, 404, "not found\n")

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the log

        self._metrics = metrics
        self._ready = ready
        self._unknown = unknown_fields
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="citysense-observe", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, body: str, ctype: str = "text/plain"
    ) -> None:
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and readiness on http://%s:%d", *self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
