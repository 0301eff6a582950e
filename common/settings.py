"""Settings every CitySense process shares, from CITYSENSE_* environment variables or a `.env`.

Each process (ingest, api, simulate) extends `CommonSettings` with its own knobs. Defaults match
what `citysense up` starts, so a newcomer needs to set nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.influx import InfluxConfig
from common.mqtturl import MqttUrl
from common.schema import Duration, Retention, seconds
from common.urls import check_user_info
from device_profiles import (
    DEFAULT_PROFILES,
    DEFAULT_REGISTRY,
    ContractError,
    Problem,
    Profile,
    Registry,
    Variant,
    load_profiles,
    load_registry,
    load_variants,
)
from wire.changes import WINDOW_S
from wire.topics import TopicLayout


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CITYSENSE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Secrets as files (compose mounts them under /run/secrets): a file named like the
        # variable, e.g. citysense_mqtt_url, holds the value. Environment variables win.
        secrets_dir=os.environ.get("CITYSENSE_SECRETS_DIR") or None,
    )

    # SecretStr: the URL may carry a password and must never be printed or logged as is.
    mqtt_url: SecretStr = SecretStr("mqtt://127.0.0.1:1883")
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: str = "citysense"
    influx_token: SecretStr | None = None
    influx_timeout: float = Field(default=10.0, gt=0)
    profiles: Path = DEFAULT_PROFILES
    registry: Path = DEFAULT_REGISTRY
    topic_root: str = "city"
    # How long InfluxDB keeps each class of data (common.schema), set at every start.
    retention_readings: Duration = "400d"
    retention_dead_letters: Duration = "90d"
    retention_changes: Duration = "40d"
    retention_alarms: Duration = "400d"
    retention_long_term: Duration = "INF"

    @field_validator("topic_root")
    @classmethod
    def _root(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#\0")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError("topic root is a plain topic prefix without wildcards, e.g. 'city'")
        return value

    @field_validator("influx_url")
    @classmethod
    def _influx_url(cls, value: str) -> str:
        check_user_info(value, "InfluxDB URL")  # a ConfigError, which never quotes the URL
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: SecretStr) -> SecretStr:
        MqttUrl.parse(value.get_secret_value())  # raises ConfigError with a clear message
        return value

    @property
    def mqtt(self) -> MqttUrl:
        return MqttUrl.parse(self.mqtt_url.get_secret_value())

    @property
    def influx(self) -> InfluxConfig:
        token = self.influx_token.get_secret_value() if self.influx_token else None
        return InfluxConfig(
            url=self.influx_url,
            database=self.influx_db,
            token=token,
            timeout=self.influx_timeout,
        )

    @property
    def retention(self) -> Retention:
        return Retention(
            readings=self.retention_readings,
            dead_letters=self.retention_dead_letters,
            changes=self.retention_changes,
            alarms=self.retention_alarms,
            long_term=self.retention_long_term,
        )

    @property
    def topics(self) -> TopicLayout:
        return TopicLayout(self.topic_root)

    def load_contract(self) -> tuple[dict[str, Profile], Registry]:
        """Profiles and registry; raises device_profiles.ContractError listing every problem."""
        profiles = load_profiles(self.profiles)
        self._marks_outlive_readings(profiles)
        return profiles, load_registry(self.registry, profiles, self.load_variants(profiles))

    def _marks_outlive_readings(self, profiles: dict[str, Profile]) -> None:
        """The oldest reading a profile accepts lands in a window whose change mark (wire.changes)
        is still kept: a write into a window whose mark has expired moves no mark, so the API's
        cached aggregates, roll-ups and catch-ups would never see it. Refused at start."""
        kept = seconds(self.retention_changes)
        if kept is None:
            return
        problems = [
            Problem(
                str(self.profiles),
                None,
                f"{name}: timestamp.max_age",
                f"readings up to {profile.timestamp.max_age:.0f} s old are accepted, but change "
                f"marks are kept {self.retention_changes} (CITYSENSE_RETENTION_CHANGES): a late "
                "reading would land where no mark tells the API; keep the marks longer than "
                f"max_age and a {WINDOW_S // 60}-minute window, or accept younger readings only",
            )
            for name, profile in sorted(profiles.items())
            if profile.timestamp.max_age + WINDOW_S >= kept
        ]
        if problems:
            raise ContractError(problems)

    def load_variants(self, profiles: dict[str, Profile]) -> dict[tuple[str, str], Variant]:
        """Vendor variants, keyed by (profile, variant); raises ContractError on any problem."""
        return load_variants(self.profiles, profiles)


def settings_problems(exc: ValidationError) -> str:
    """Which setting is wrong and why, one per line, without the value: pydantic's own message
    quotes the input, and for the MQTT URL or the InfluxDB token that is a secret."""
    return "\n".join(_problem(e["loc"], e["msg"]) for e in exc.errors())


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")  # pydantic's, before our validators' text
    if not loc:  # a check across settings names the settings in its message
        return f"  {message}"
    return f"  CITYSENSE_{'_'.join(map(str, loc)).upper()}: {message}"
