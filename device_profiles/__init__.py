"""The contract ingest, the API and the simulators share: device profiles and the registry."""

from device_profiles.load import (
    DEFAULT_PROFILES,
    DEFAULT_REGISTRY,
    ContractError,
    Problem,
    Registry,
    load_profile,
    load_profiles,
    load_registry,
)
from device_profiles.model import (
    Device,
    FieldKind,
    FieldSpec,
    FieldType,
    Profile,
    SummaryOp,
    SummarySpec,
    TimestampPolicy,
    parse_duration,
)
from device_profiles.topics import TopicLayout

__all__ = [
    "DEFAULT_PROFILES",
    "DEFAULT_REGISTRY",
    "ContractError",
    "Device",
    "FieldKind",
    "FieldSpec",
    "FieldType",
    "Problem",
    "Profile",
    "Registry",
    "SummaryOp",
    "SummarySpec",
    "TimestampPolicy",
    "TopicLayout",
    "load_profile",
    "load_profiles",
    "load_registry",
    "parse_duration",
]
