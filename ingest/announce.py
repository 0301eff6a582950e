"""The state feed's sending end: what was just stored, announced to the API (wire.statefeed).

One `Announcer` per worker run: its publisher name is the client id and a random suffix drawn at
start, so that a restarted worker's numbering, which begins again at 0, is not taken for a gap
by a reader that saw the previous run. Messages are numbered and handed to the MQTT client under
one lock: the writer and the unspool thread both announce, and a reader must receive the numbers
in order to tell a lost message from a late one.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Callable, Sequence

from ingest.changes import marks_of
from wire import statefeed

log = logging.getLogger(__name__)


class Announcer:
    def __init__(self, publish: Callable[[str, bytes], None], topic: str, client_id: str) -> None:
        self._publish = publish
        self._topic = topic
        self.publisher = f"{client_id}.{secrets.token_hex(4)}"
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def announce(self, readings: Sequence[statefeed.Stored], stored_marks: Sequence[str]) -> None:
        """Announce `readings` and the mark lines their write stored (best effort, QoS 0: a
        message lost is a gap in the numbering, and the reader queries InfluxDB instead)."""
        marks = marks_of(stored_marks)
        with self._lock:
            try:
                for payload in statefeed.encode(
                    readings, marks=marks, publisher=self.publisher, seq=self._seq
                ):
                    self._publish(self._topic, payload)
            except (TypeError, ValueError) as exc:
                # A value the feed cannot carry (orjson refuses an integer past 64 bits): the
                # readings are stored and their marks unannounced, so the API finds them by the
                # marks. Raising would fail the batch before its acks, and its redelivery again.
                log.error("state feed: could not announce a stored batch: %s", exc)

    def farewell(self) -> tuple[str, bytes]:
        """(topic, payload) of the will to leave the broker before connecting: says this run
        went away without its final message (wire.statefeed)."""
        return self._topic, statefeed.farewell(self.publisher)

    def close(self) -> None:
        """The run's final message, once nothing more will be announced (a clean stop)."""
        with self._lock:
            for payload in statefeed.encode([], publisher=self.publisher, seq=self._seq, last=True):
                self._publish(self._topic, payload)
