"""Why a message or reading was rejected: one stable code each, used in counters and dead letters.

Codes are part of the operator interface (metrics labels, API filters): add, never rename.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # The message as a whole
    BAD_TOPIC = "bad_topic"  # not <root>/<profile>/<device_id>/telemetry
    UNKNOWN_PROFILE = "unknown_profile"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NON_FINITE = "non_finite"  # NaN or Infinity, which JSON does not allow
    TOO_DEEP = "too_deep"
    BAD_SHAPE = "bad_shape"  # not an object or a non-empty array of objects
    # The device
    UNKNOWN_DEVICE = "unknown_device"
    PROFILE_MISMATCH = "profile_mismatch"  # registry says another profile than the topic
    DEVICE_ID_MISMATCH = "device_id_mismatch"  # payload claims another device than the topic
    BAD_DEVICE_ID = "bad_device_id"  # an unregistered id with characters no device id may hold
    # One reading
    MISSING_TIMESTAMP = "missing_timestamp"
    # A retained copy (sent to a new subscription) without one: published at any time before,
    # its receive time is not when it was measured.
    RETAINED_WITHOUT_TIMESTAMP = "retained_without_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"  # a state outside its allowed values, text with control chars
    UNKNOWN_FIELD = "unknown_field"  # a field the profile does not declare (unknown_fields: reject)
    MISSING_FIELD = "missing_field"
    NO_FIELDS = "no_fields"  # nothing the profile knows
    DUPLICATE = "duplicate"  # the same reading again (same device, timestamp and values)
    TIMESTAMP_CONFLICT = "timestamp_conflict"  # other values under an already used timestamp
    # After the fact
    WRITE_REJECTED = "write_rejected"  # InfluxDB refused the line itself (e.g. field type conflict)
    INTERNAL_ERROR = "internal_error"  # a bug of ours; the message is kept, not lost
