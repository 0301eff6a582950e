"""Dead letters shaped as ingest stores them (wire.deadletters), written here so API tests do not
depend on ingest: topic `city/<profile>/<device>/telemetry`, detail `<reason> detail`, worker
`w1`."""

from __future__ import annotations

from wire.deadletters import DeadLetter, replay_mark_line
from wire.deadletters import dead_letter_line as letter_line
from wire.reasons import Reason

WORKER = "w1"


def dead_letter_line(
    time_ns: int,
    reason: str,
    profile: str,
    device_id: str,
    raw: bytes,
    *,
    replayed: tuple[int, str] | None = None,
) -> str:
    """The line of one dead letter; with `replayed` (when, result), also the mark replay merges
    onto it, as a second line of the same point."""
    letter = DeadLetter(
        reason=Reason(reason),
        profile=profile,
        topic=f"city/{profile}/{device_id}/telemetry",
        device_id=device_id,
        detail=reason + " detail",
        payload=raw,
        worker=WORKER,
    )
    text = letter_line(letter, time_ns)
    if replayed:
        tags = {"reason": reason, "profile": profile, "worker": WORKER}
        text += "\n" + replay_mark_line(tags, replayed[1], replayed[0], time_ns)
    return text
