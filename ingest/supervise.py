"""`citysense ingest --workers N`: N worker processes on one shared subscription, kept alive.

Each worker owns a slot with a stable MQTT client id (`<client_id>-<slot>`). Mosquitto keeps
dealing a share of the messages to a member's session while it is disconnected and keeps that
member's unacknowledged messages until the same client id returns; so a worker that dies is
restarted into its own slot, where its session — and everything it had not acknowledged — is
waiting for it. Nothing is lost and, by idempotent storage, nothing is stored twice.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from common.process import die_with_parent

log = logging.getLogger("citysense.ingest.supervise")

RESTART_DELAY = 1.0  # seconds before a dead worker's slot is refilled; stops crash loops spinning


@dataclass
class Slot:
    number: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "citysense.cli", "ingest"],
            env=self.env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
        )
        self.started = time.monotonic()
        log.info("worker %d started (pid %d)", self.number, self.process.pid)


def slot_env(
    base: dict[str, str], client_id: str, group: str, http_port: int, n: int
) -> dict[str, str]:
    return {
        **base,
        "CITYSENSE_CLIENT_ID": f"{client_id}-{n}",
        "CITYSENSE_SHARE_GROUP": group,
        # Slot n (from 1) on the n-th port from CITYSENSE_HTTP_PORT: the first on the port itself,
        # as a single worker; from slot 2 on, the ports after it (9102 was also the rollup
        # keeper's default, which slot 1 took before).
        "CITYSENSE_HTTP_PORT": str(http_port + n - 1 if http_port else 0),
    }


def supervise(workers: int, client_id: str, group: str, http_port: int) -> int:
    slots = [
        Slot(n, slot_env(dict(os.environ), client_id, group, http_port, n))
        for n in range(1, workers + 1)
    ]
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping %d workers", signal.Signals(signum).name, workers)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in slots:
        slot.start()
    while not stop.wait(0.2):
        for slot in slots:
            _keep_alive(slot)
    return _stop_all(slots)


def _keep_alive(slot: Slot) -> None:
    assert slot.process is not None
    code = slot.process.poll()
    if code is None:
        return
    if time.monotonic() - slot.started < RESTART_DELAY:
        return
    slot.restarts += 1
    log.warning(
        "worker %d exited with %s; restarting it into its slot (restart %d)",
        slot.number,
        code,
        slot.restarts,
    )
    slot.start()


def _stop_all(slots: list[Slot]) -> int:
    """SIGTERM every worker (each drains and acknowledges), then wait for all."""
    for slot in slots:
        if slot.process is not None and slot.process.poll() is None:
            slot.process.terminate()
    worst = 0
    for slot in slots:
        if slot.process is not None:
            worst = max(worst, exit_status(slot.process.wait()))
    return worst


def exit_status(returncode: int) -> int:
    """A worker's return code as a shell's status: killed by signal N (Popen's -N) is 128 + N,
    not a negative number that max() would rank below a clean 0."""
    return 128 - returncode if returncode < 0 else returncode
