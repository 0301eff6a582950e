"""Request and response models of the HTTP API (`*Query` in, `*Public` out).

Times are RFC 3339 strings in UTC (`...Z`) with up to nanosecond precision, exactly as stored:
JSON has no time type, and a float of epoch seconds would lose nanoseconds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.core.query import Aggregate
from api.core.readings import Value
from device_profiles import SummaryOp

Rfc3339 = str


class ErrorPublic(BaseModel):
    detail: str = Field(examples=["unknown device 'SL-999999'"])


class ReadingPublic(BaseModel):
    time: Rfc3339 = Field(description="Device timestamp of the reading, RFC 3339 UTC")
    values: dict[str, Value] = Field(
        description="Contract fields present in this reading; fields the device did not send "
        "are absent, never null",
        examples=[{"powerState": "on", "powerConsumption": 112.5}],
    )


Reporting = Literal["on_time", "late", "silent", "never"]


class StatusPublic(BaseModel):
    reporting: Reporting = Field(
        description="Against the profile's reporting interval: on_time while the last reading is "
        "at most late_after x interval old, late until silent_after x, then silent; never if no "
        "reading within the lookback"
    )
    connected: bool | None = Field(
        description="From the device's retained MQTT status topic (its last will says offline); "
        "null if it never published one"
    )
    last_seen: Rfc3339 | None = Field(description="Device timestamp of the latest reading")


class DevicePublic(BaseModel):
    device_id: str
    profile: str
    district: str
    latitude: float
    longitude: float
    address: str
    status: StatusPublic
    reading: ReadingPublic | None = Field(
        description="Latest reading within the lookback window, or null if none"
    )


class DeviceListPublic(BaseModel):
    total: int = Field(description="Devices matching the filters, over all pages")
    limit: int
    offset: int
    items: list[DevicePublic]


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float] = Field(description="[longitude, latitude] (WGS 84)")


class FeaturePropertiesPublic(BaseModel):
    device_id: str
    profile: str
    district: str
    reporting: Reporting
    connected: bool | None
    last_seen: Rfc3339 | None
    values: dict[str, Value] = Field(description="Latest values (empty if none)")


class FeaturePublic(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: PointGeometry
    properties: FeaturePropertiesPublic


class FeatureCollectionPublic(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    total: int = Field(description="Devices matching the filters, over all pages")
    limit: int
    offset: int
    features: list[FeaturePublic]


class BucketPublic(BaseModel):
    time: Rfc3339 = Field(description="Start of the window")
    value: Value


class HistoryPublic(BaseModel):
    device_id: str
    profile: str
    field: str
    unit: str | None = Field(
        description="Unit of the values: the field's, per hour for a rate; null for counts and "
        "unitless fields"
    )
    agg: Aggregate
    every: str = Field(description="The window as requested", examples=["15m", "day"])
    tz: str | None = Field(description="Time zone of calendar windows; null for fixed widths")
    every_seconds: int | None = Field(description="Width of fixed windows; null for calendar ones")
    start: Rfc3339 = Field(description="Inclusive start of the window")
    end: Rfc3339 = Field(description="Exclusive end of the window")
    points: list[BucketPublic] = Field(description="Buckets with readings, oldest first")


class DistrictPublic(BaseModel):
    district: str
    devices: int
    profiles: dict[str, int] = Field(description="Registered devices per profile (every profile)")


class DistrictListPublic(BaseModel):
    items: list[DistrictPublic]


class FigurePublic(BaseModel):
    name: str
    op: SummaryOp
    field: str
    equals: bool | float | str | None
    unit: str | None = Field(description="Unit of the value; null for counts of devices")
    value: int | float | None = Field(
        description="The figure; null for sum/mean/min/max when no device contributed a value"
    )
    devices: int = Field(description="Reporting devices whose latest reading had the field")


class ProfileSummaryPublic(BaseModel):
    profile: str
    devices_registered: int
    devices_reporting: int = Field(description="Devices with at least one reading in the window")
    figures: list[FigurePublic]


class DistrictSummaryPublic(BaseModel):
    district: str
    window_seconds: int
    start: Rfc3339 = Field(description="Readings at or after this time count")
    end: Rfc3339 = Field(description="When the summary was computed")
    profiles: list[ProfileSummaryPublic]


class ComponentPublic(BaseModel):
    status: Literal["up", "down"]
    detail: str | None = None


class HealthPublic(BaseModel):
    status: Literal["ok", "unavailable"]
    influxdb: ComponentPublic
    mqtt: ComponentPublic
    background: ComponentPublic = Field(
        description="The process's own background work (live state, alarms, warming): down "
        "once any of it died, and the process is stopping for its supervisor to restart it"
    )


class DeadLetterPublic(BaseModel):
    time: Rfc3339 = Field(description="When ingest received the message")
    reason: str = Field(
        description="Reason code (see ingest/reasons.py)", examples=["out_of_range"]
    )
    profile: str = Field(description="The topic's profile, or `unknown`")
    worker: str | None = Field(description="Ingest worker that rejected it, if recorded")
    topic: str | None
    device_id: str | None
    detail: str | None = Field(description="What exactly was wrong")
    payload: str | None = Field(
        description="The message as received (bounded): text when it was UTF-8, else base64"
    )
    payload_encoding: Literal["text", "base64"] | None
    payload_bytes: int | None = Field(description="Size of the original payload")
    truncated: bool | None = Field(description="True if `payload` is cut at the size limit")
    replayed_at: Rfc3339 | None = Field(description="When `citysense replay` last retried it")
    replay_result: str | None = Field(description="What the replay did with it")


class DeadLetterListPublic(BaseModel):
    total: int = Field(description="Dead letters matching the filters, over all pages")
    limit: int
    offset: int
    start: Rfc3339
    end: Rfc3339
    items: list[DeadLetterPublic] = Field(description="Newest first")


class DeadLetterCountsPublic(BaseModel):
    by: Literal["reason", "profile"]
    start: Rfc3339
    end: Rfc3339
    total: int
    counts: dict[str, int] = Field(examples=[{"out_of_range": 12, "invalid_json": 3}])


class AggregateRowPublic(BaseModel):
    time: Rfc3339 = Field(description="Start of the window")
    district: str | None = Field(description="The group's district; null when not grouped")
    value: Value | None = Field(description="null when suppressed (open data) or no data")
    devices: int | None = Field(
        description="Devices that contributed; null when suppressed (open data)"
    )
    registered: int = Field(description="Devices of the profile registered in the group")
    suppressed: bool = Field(
        description="True if fewer than min_devices devices contributed (open data only)"
    )


class DeviceFilterQuery(BaseModel):
    """The filters of GET /devices and /devices.geojson (api.live.devices.DeviceFilter)."""

    profile: str | None = Field(None, description="Profile name", examples=["streetlight"])
    district: str | None = Field(None, description="District name")
    status: Reporting | None = Field(None, description="Reporting status right now")
    connected: bool | None = Field(
        None, description="Connection status from the retained status topic"
    )
    bbox: str | None = Field(
        None,
        description="min_lon,min_lat,max_lon,max_lat (WGS 84), inclusive",
        examples=["120.0,30.0,120.5,30.5"],
    )


class AlarmFilterQuery(BaseModel):
    """The filters of GET /alarms (api.live.alarm_queries.AlarmFilter)."""

    state: Literal["active", "cleared", "all"] = "active"
    profile: str | None = None
    district: str | None = None
    device_id: str | None = Field(None, max_length=128)
    rule: str | None = Field(None, max_length=64)
    severity: Literal["info", "warning", "critical"] | None = None
    acknowledged: bool | None = None
    start: str | None = Field(None, description="RFC 3339")
    end: str | None = Field(None, description="RFC 3339, exclusive")


class AggregateQuery(BaseModel):
    """The query parameters of GET /aggregates (api.compute.aggregates.AggregateRequest)."""

    profile: str = Field(description="Profile name", examples=["water_pipe"])
    field: str = Field(description="A field of the profile", examples=["pressure"])
    agg: Aggregate = Field(Aggregate.MEAN, description="Aggregate")
    equals: str | None = Field(
        None, description="With agg=count: devices whose last value equals this"
    )
    every: str = Field("1h", description="Window: a width, or hour/day/week/month")
    tz: str = Field("UTC", description="IANA time zone of calendar windows")
    group_by: Literal["district", "none"] = Field("district", description="Groups")
    district: str | None = Field(None, description="Only this district")
    start: str | None = Field(
        None, description="RFC 3339; default: the start of the window holding 24 h before end"
    )
    end: str | None = Field(
        None, description="RFC 3339, exclusive; default: the end of the window holding now"
    )


class AggregatePublic(BaseModel):
    profile: str
    field: str
    agg: Aggregate
    equals: bool | float | str | None
    unit: str | None
    every: str
    tz: str | None
    start: Rfc3339
    end: Rfc3339
    group_by: Literal["district", "none"]
    min_devices: int | None = Field(description="Open data: the smallest group published")
    rows: list[AggregateRowPublic] = Field(description="Oldest first, then by district")


class AlarmPublic(BaseModel):
    id: str
    device_id: str
    profile: str
    district: str
    rule: str = Field(description="Rule name from the profile, or `silent`")
    severity: Literal["info", "warning", "critical"]
    field: str
    op: str
    threshold: str
    value: Value | None = Field(
        description="Latest (worst) value while active; at clearing, the clearing value"
    )
    state: Literal["active", "cleared"]
    start: Rfc3339 = Field(description="Device time the condition began")
    end: Rfc3339 | None = Field(description="Device time it cleared; null while active")
    acknowledged_by: str | None = Field(description="Token name that acknowledged it")
    acknowledged_at: Rfc3339 | None
    note: str | None


class AlarmListPublic(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AlarmPublic] = Field(description="Newest start first")


class AcknowledgePublic(BaseModel):
    note: str | None = Field(default=None, max_length=1000)
