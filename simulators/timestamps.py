"""The three timestamp forms devices put on the wire: epoch seconds, epoch ms, RFC 3339 UTC."""

from __future__ import annotations

import time
from enum import Enum


class TsForm(Enum):
    SECONDS = "seconds"  # JSON integer, whole seconds: cheap firmware
    MILLIS = "millis"  # JSON integer
    RFC3339 = "rfc3339"  # "2026-11-22T03:00:00.123Z"

    @property
    def resolution_ms(self) -> int:
        """A device of this form can only express instants on multiples of this."""
        return 1000 if self is TsForm.SECONDS else 1


# Device index % 3 picks the form, so any three consecutive devices cover all of them.
FORMS = (TsForm.SECONDS, TsForm.MILLIS, TsForm.RFC3339)


def encode(form: TsForm, ts_ms: int) -> int | str:
    """`ts_ms` as the device writes it; seconds-form callers pass whole-second instants."""
    if form is TsForm.MILLIS:
        return ts_ms
    seconds, millis = divmod(ts_ms, 1000)
    if form is TsForm.SECONDS:
        return seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
