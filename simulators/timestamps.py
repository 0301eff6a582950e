"""The three timestamp forms devices put on the wire: epoch seconds, epoch ms, RFC 3339 UTC."""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import Enum


class TsForm(Enum):
    # Values are the names a profile's `timestamp.forms` uses.
    SECONDS = "epoch_s"  # JSON integer, whole seconds: cheap firmware
    MILLIS = "epoch_ms"  # JSON integer
    RFC3339 = "rfc3339"  # "2026-11-22T03:00:00.123Z"

    @property
    def resolution_ms(self) -> int:
        """A device of this form can only express instants on multiples of this."""
        return 1000 if self is TsForm.SECONDS else 1


def forms_of(allowed: Iterable[str]) -> tuple[TsForm, ...]:
    """The forms a profile accepts, in a fixed order. The fleet gives device number i the form
    forms[i % len(forms)], so any three consecutive devices cover all three."""
    wanted = set(allowed)
    return tuple(form for form in TsForm if form.value in wanted)


def encode(form: TsForm, ts_ms: int) -> int | str:
    """`ts_ms` as the device writes it; seconds-form callers pass whole-second instants."""
    if form is TsForm.MILLIS:
        return ts_ms
    seconds, millis = divmod(ts_ms, 1000)
    if form is TsForm.SECONDS:
        return seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
