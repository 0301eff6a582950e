"""The declarative contract ingest, the API and the simulators share: device profiles (what each
kind of device sends, its units, limits, alarms and summaries) and the registry (which devices
exist, where). What travels between the services is the other half of the contract: `wire`."""

from device_profiles.load import (
    DEFAULT_PROFILES,
    DEFAULT_REGISTRY,
    ContractError,
    Problem,
    Registry,
    load_profile,
    load_profiles,
    load_registry,
    load_variants,
)
from device_profiles.model import (
    AlarmOp,
    AlarmRule,
    Device,
    FieldKind,
    FieldSpec,
    FieldType,
    Profile,
    Severity,
    SummaryOp,
    SummarySpec,
    TimestampPolicy,
    Variant,
    VariantField,
    parse_duration,
)

__all__ = [
    "DEFAULT_PROFILES",
    "DEFAULT_REGISTRY",
    "AlarmOp",
    "AlarmRule",
    "ContractError",
    "Device",
    "FieldKind",
    "FieldSpec",
    "FieldType",
    "Problem",
    "Profile",
    "Registry",
    "Severity",
    "SummaryOp",
    "SummarySpec",
    "TimestampPolicy",
    "Variant",
    "VariantField",
    "load_profile",
    "load_profiles",
    "load_registry",
    "load_variants",
    "parse_duration",
]
