"""Enrich: a validated reading + its registry entry → tags for storage, or a rejection."""

from __future__ import annotations

from device_profiles import Device
from device_profiles.model import DEVICE_ID
from ingest.stages import Enriched, Reading
from ingest.validate import Invalid
from wire.reasons import Reason

# District recorded for devices accepted although not in the registry (policy "accept").
UNASSIGNED = "unassigned"


def enrich(
    reading: Reading, device: Device | None, *, accept_unknown: bool = False
) -> Enriched | Invalid:
    """`device` is the registry's entry for the reading's device id, None if it has none."""
    if device is None:
        return _unknown(reading, accept_unknown)
    if device.profile != reading.profile:
        return Invalid(
            Reason.PROFILE_MISMATCH,
            f"device is registered as {device.profile!r}, published as {reading.profile!r}",
        )
    return Enriched(
        measurement=reading.profile,
        device_id=reading.device_id,
        district=device.district,
        time_ns=reading.time_ns,
        fields=reading.fields,
    )


def _unknown(reading: Reading, accept: bool) -> Enriched | Invalid:
    if not accept:
        return Invalid(Reason.UNKNOWN_DEVICE, f"device {reading.device_id!r} is not registered")
    if not DEVICE_ID.match(reading.device_id):
        # Registered ids were checked when the registry was loaded; this one becomes a tag only
        # if it is just as safe.
        return Invalid(Reason.BAD_DEVICE_ID, f"device id {reading.device_id[:64]!r} is not allowed")
    return Enriched(reading.profile, reading.device_id, UNASSIGNED, reading.time_ns, reading.fields)
