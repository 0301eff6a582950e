"""Enrich: a validated reading + the device registry → tags for storage, or a rejection."""

from __future__ import annotations

from device_profiles import Registry
from ingest.reasons import Reason
from ingest.stages import Enriched, Reading
from ingest.validate import Invalid


def enrich(reading: Reading, registry: Registry) -> Enriched | Invalid:
    device = registry.get(reading.device_id)
    if device is None:
        return Invalid(Reason.UNKNOWN_DEVICE, f"device {reading.device_id!r} is not registered")
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
