"""A process's own small HTTP endpoint: /metrics, /live, /ready and whatever else it answers
(ingest.observe for an ingest worker, api.keeper_cli for the rollup keeper).

Standard library only, in a daemon thread: it must keep answering while the process's work is
busy (a pipeline full of messages, a long round of rollups), and a supervisor's probe must never
wait for that work. Each path answers from a callable the process gives, called per request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMETHEUS_TEXT = "text/plain; version=0.0.4"

Answer = tuple[int, str | bytes, str]  # status, body, Content-Type
NOT_FOUND: Answer = (404, "not found\n", "text/plain")


class ObserveServer:
    """Answers GET on each path of `routes`, `not_found` on any other."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: Mapping[str, Callable[[], Answer]],
        *,
        thread_name: str,
        log: logging.Logger,
        not_found: Answer = NOT_FOUND,
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path)
                status, body, ctype = not_found if route is None else route()
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes and probes every few seconds would drown the log

        self._log = log
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=thread_name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        self._log.info("metrics and readiness on http://%s:%d", *self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
