"""Supervision of the API process's long-lived background work (the live state's task, the alarm
writer, warming, the MQTT subscriber's thread).

One that ends with an unexpected exception is logged with its traceback and counted; the process
is then failed: /health answers 503 naming it, and `on_failure` (from `citysense api`: stop the
server, which then exits non-zero) lets its supervisor restart it. Swallowing the error and
serving on would answer from a state that no longer moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, on_failure: Callable[[], None] | None = None) -> None:
        self._on_failure = on_failure
        self.failed: str | None = None  # what died first
        self.crashes = 0

    def start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._done)
        return task

    def fail(self, name: str, exc: BaseException) -> None:
        """`name` died of `exc` (also for threads, which report here themselves)."""
        logger.error(
            "%s died; the process stops for its supervisor to restart it", name, exc_info=exc
        )
        self.crashes += 1
        if self.failed is None:
            self.failed = f"{name}: {type(exc).__name__}: {exc}"
            if self._on_failure is not None:
                self._on_failure()

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.fail(task.get_name(), exc)
