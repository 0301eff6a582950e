"""Settings of the API process: the common CITYSENSE_* settings plus CITYSENSE_API_* knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from common.schema import seconds
from common.settings import CommonSettings
from common.urls import check_user_info
from device_profiles import parse_duration


def _setting_seconds(value: str | float) -> float:
    """A duration setting: seconds, as a number or as the text of one (an environment
    variable's value, as the README gives the defaults), or a number with a unit (`6h`). Only
    here: in a request, `every=5` stays refused as ambiguous (api.core.times)."""
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        return float(value)
    return parse_duration(value)


class ApiSettings(CommonSettings):
    # Loopback by default: exposing the API is a deliberate act of the operator.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # Seconds requests still open at SIGTERM (a screen's /stream never ends by itself) get before
    # they are cancelled and the app's own shutdown runs: its last alarm events, its snapshot.
    # Without a bound uvicorn waited for them for ever, and the process was killed instead.
    api_shutdown_grace: int = Field(default=3, ge=0, le=60)
    # How far back "latest reading" queries look. Bounding them keeps InfluxDB from scanning
    # every shard of a measurement; it matches the oldest reading ingest accepts (max_age).
    api_latest_lookback: float = Field(default=30 * 86400.0, ge=1.0)
    # A history response never holds more buckets than this; wider requests get a 422.
    api_history_max_points: int = Field(default=10_000, ge=1)
    # InfluxDB queries one request may have running at once (an aggregate per district is one
    # query per district; the start-up load one per profile and district): InfluxDB runs
    # separate queries on separate cores. About InfluxDB's cores: more only slows each query
    # down towards influx_timeout (on 2 cores, 4 at once made 10 s queries time out).
    api_query_concurrency: int = Field(default=2, ge=1)
    # How long InfluxDB may take to start (and continue) answering a latest-state load query
    # (one profile and district): it plans every series before the first chunk, which took it
    # over influx_timeout (10 s) for a district of 100,000 streetlights in a region of 1,000,000
    # devices. A failed load is retried from scratch, so too short a bound never loads at all.
    # The rollup keeper's reads of a district, and foresight's, wait as long.
    api_load_timeout: float = Field(default=600.0, gt=0)
    # Series (devices) one latest-state query (or foresight's read of a district) asks InfluxDB
    # for at most: a larger (profile, district) part is asked in pieces of device-id prefixes
    # (api.core.series_split). InfluxDB opens a cursor per series before answering, so its
    # memory grows with them (at 300,000 devices a restart querying every part took it from 7.5
    # to 13.4 GB). Not small: each piece's pattern costs InfluxDB a pass over the measurement's
    # device ids (seconds at 600,000), so at 1,000,000 devices the full load took 89 s in
    # pieces of 10,000 against 58 s whole.
    api_load_series: int = Field(default=25_000, ge=1)
    # Aggregates across devices are kept per (window, group) cell until a write touches their
    # windows (api.cells); a cell whose windows did change is still served this many seconds
    # after it was computed, so an answer lags the stored data by at most this much.
    api_aggregate_max_staleness: float = Field(default=30.0, ge=0)
    api_aggregate_cells: int = Field(default=200_000, ge=0)  # kept at most (about 200 B each)
    # Aggregates kept computed in the background (api.warm): GET /aggregates query strings,
    # separated by ";".
    api_aggregate_warm: str = ""
    # Questions clients ask over the default (moving) window are kept warm too, at most this
    # many, each until nobody asked it for `warm_recent_for` seconds (0: none).
    api_aggregate_warm_recent: int = Field(default=50, ge=0)
    api_aggregate_warm_recent_for: float = Field(default=600.0, gt=0)
    # Of those, at most this many per token: one client cannot take every slot.
    api_aggregate_warm_recent_per_token: int = Field(default=10, ge=1)
    # Rollups across devices kept as data in InfluxDB (api.compute.keeper, wire.rollups): the
    # keeper backfills every window of the readings and then recomputes the windows whose change
    # marks moved. A deployment runs it as a process of its own (`citysense rollups`), so that
    # its reads and computing never hold the API's event loop; `keep` runs it inside this API
    # process instead (development and tests). One keeper is enough (two only write the same
    # points again); every API replica serves the rollups (`serve`).
    api_rollups_keep: bool = False
    api_rollups_serve: bool = True
    # Values the keeper computes at a time (per unit of work, `api_query_concurrency` at once):
    # read in chunks of this many values (rows x the fields a read asks) and computed a batch
    # of whole devices at a time, so its memory does not grow with a district-day's readings.
    api_rollups_read_rows: int = Field(default=100_000, ge=1)
    # Fields one keeper read asks (api.compute.keeper.compute_rollups: fewer queries cost InfluxDB
    # less CPU, but a larger one holds up everyone else's queries and writes longer).
    api_rollups_fields_per_read: int = Field(default=1, ge=1)
    # `citysense rollups`: its /metrics, /live and /ready listen here (0: no port).
    api_rollups_host: str = "127.0.0.1"
    api_rollups_port: int = Field(default=9102, ge=0, le=65535)
    # `citysense rollups` lowers its CPU priority by this much (os.nice): on a machine shared
    # with the API, a round after each quarter-hour (tens of seconds of CPU at 100,000 devices)
    # must not slow the API's answers; rollups a few seconds later cost nothing (0: as is).
    api_rollups_nice: int = Field(default=10, ge=0, le=19)
    # How often the keeper looks at the change marks; a window still filling is recomputed at
    # most every `open_every` seconds (each recomputation of an open day reads the day so far).
    # Below max_staleness, so an open window's rollup is served rather than computed again.
    api_rollups_every: float = Field(default=5.0, gt=0)
    api_rollups_open_every: float = Field(default=20.0, ge=0)
    # The open day at most this often (it reads the day so far); between, the current day's
    # cell is computed from the readings once its marks moved past max_staleness.
    api_rollups_open_day_every: float = Field(default=300.0, ge=0)
    # Health probes (InfluxDB /ping, MQTT CONNECT) give up after this many seconds.
    api_health_timeout: float = Field(default=3.0, gt=0)
    # How often the tokens file is checked for changes (new and revoked tokens).
    api_tokens_reload_every: float = Field(default=2.0, gt=0)
    # /health needs no token: its broker probe (a real CONNECT) is answered from one probe per
    # this many seconds, however often it is asked.
    api_health_probe_every: float = Field(default=5.0, ge=0)

    # --- access (api.tokens) ---
    # The operator's tokens file (YAML or JSON, SHA-256 hashes only). Without one the API refuses
    # to start unless CITYSENSE_API_AUTH=off says, explicitly, that it may serve everyone.
    api_tokens: Path | None = None
    api_auth: Literal["on", "off"] = "on"
    # Open data: a figure is published only if at least this many devices contributed to it.
    api_open_data_min_devices: int = Field(default=5, ge=2)
    # Open data is served on one fixed calendar grid (see api.opendata for why).
    api_open_data_timezone: str = "UTC"

    # --- latest state (api.state) ---
    # A device is late once its last reading is older than late_after x its profile's reporting
    # interval, silent after silent_after x.
    api_late_after: float = Field(default=1.5, gt=1.0)
    api_silent_after: float = Field(default=3.0, gt=1.0)
    # How often reporting status is re-judged (transitions become events at this resolution).
    api_status_check_interval: float = Field(default=1.0, gt=0)
    # The state feed is QoS 0: re-read the latest readings from InfluxDB this often.
    api_state_reconcile_interval: float = Field(default=300.0, gt=0)
    # A folder where the API keeps a snapshot of its latest state (api.live.snapshot), written
    # after each complete load and at shutdown and read at start, so that a restart queries
    # InfluxDB only for what changed since. Unset: no snapshot, every start loads in full. One
    # folder per replica is simplest; replicas sharing one overwrite each other's (each valid).
    api_data_dir: Path | None = None
    # A snapshot larger than this is neither written nor read (about 110 B a device).
    api_snapshot_max_bytes: int = Field(default=1024**3, ge=1024)
    # A snapshot older than this is ignored (its change marks may have expired meanwhile).
    api_snapshot_max_age: float = Field(default=86400.0, gt=0)
    # A running replica (its base URL) whose latest state a replica with no snapshot of its own
    # (a new one, or its data folder lost) starts from instead of loading from InfluxDB in full
    # (api.live.peer: GET /state/snapshot with a `city` token, the next setting). Unset: none.
    api_state_peer: str | None = None
    api_state_peer_token: SecretStr | None = None

    # --- alarms (api.alarms) ---
    # Alarm events older than this are not replayed at start (active alarms older stay lost).
    api_alarm_lookback: float = Field(default=30 * 86400.0, ge=60.0)
    # Memory holds every active alarm and this many cleared ones, the newest; InfluxDB holds all.
    api_alarm_history: int = Field(default=10_000, ge=0)
    # Alarm events waiting for InfluxDB (while it is down); past it the oldest are dropped,
    # counted and logged: the readings behind them are stored, the alarms' state is in memory.
    api_alarm_outbox_bytes: int = Field(default=16 * 1024**2, ge=64 * 1024)
    # An acknowledgement is answered once its event is stored; 503 if not stored within this.
    api_alarm_ack_wait: float = Field(default=10.0, gt=0.0, le=120.0)

    # --- live push (api.hub) ---
    api_stream_queue: int = Field(default=10_000, ge=10)
    # State-feed messages (≤ 500 readings each, ~250 KB decoded) waiting to be applied; past it
    # the subscriber waits, and the broker holds the rest (at a restart, all it kept for us).
    api_feed_backlog: int = Field(default=16, ge=1)
    # With a data folder, the broker keeps the feed's messages for us this long while we are
    # away (an MQTT 5 session): a restart within it takes them instead of querying InfluxDB.
    # Bounded in the broker by its per-client queue (citysense/conf/mosquitto.conf).
    api_feed_session_expiry: int = Field(default=600, ge=0, le=86_400)
    # A full reload of the latest state this often: catch-ups (api_state_reconcile_interval)
    # find what the change marks show; this finds readings written with no mark at all.
    api_state_full_reload_interval: float = Field(default=6 * 3600.0, gt=0)
    # A start with no snapshot or peer, or a start's catch-up after them, reads the latest rows
    # (api.live.rows) once a full load has made them whole, not the readings: false to always
    # read the readings (the full reload does regardless, and writes the rows).
    api_state_from_rows: bool = True
    # The latest rows asked of InfluxDB gzipped: off, since on one host it only cost CPU
    # (common.influx's query_chunks); on for an InfluxDB across a slow link (tens of MB a start).
    api_rows_compressed: bool = False
    # The latest rows of the full load the rows' point names are compacted (api.live.compact)
    # this long after start, then at every full reload: to the devices no ingest worker's row
    # holds as new, so a start reads about a row per device per worker (0: never).
    api_rows_compact_after: float = Field(default=300.0, ge=0)
    api_stream_heartbeat: float = Field(default=15.0, gt=0)

    # --- foresight (api.foresight) ---
    # Signals, forecasts and data quality computed in the background this often (0: off), over
    # this many past days, in the city's time zone, with its public holidays (ISO dates, comma
    # separated) for the forecast.
    api_foresight_every: float = Field(default=3600.0, ge=0)
    # The first round this long after start: a round is a minute of CPU at 100,000 devices, and
    # a restarted API first loads its state and answers the clients coming back; what the last
    # rounds stored is served meanwhile.
    api_foresight_first_after: float = Field(default=120.0, ge=0)
    api_foresight_days: int = Field(default=21, ge=9, le=28)
    api_foresight_timezone: str = "Asia/Shanghai"
    api_foresight_holidays: str = ""
    # The process computing a round (api.foresight.worker) lowers its CPU priority by this
    # much: the API's answers first; foresight a little later costs nothing (0: as is).
    api_foresight_nice: int = Field(default=10, ge=0, le=19)
    # Exempt what start-up built from Python's cyclic garbage collector (gc.freeze): a full
    # collection walking a 100,000-device registry and state held answers up for 0.1-0.3 s.
    api_gc_freeze: bool = True

    @field_validator("api_tokens", "api_data_dir", mode="before")
    @classmethod
    def _no_tokens(cls, value: object) -> object:
        return None if value in ("", None) else value  # set but empty: no file, not "."

    @field_validator("api_latest_lookback", "api_alarm_lookback", mode="before")
    @classmethod
    def _lookback(cls, value: str | float) -> float:
        return _setting_seconds(value)

    @field_validator(
        "api_state_reconcile_interval",
        "api_state_full_reload_interval",
        "api_snapshot_max_age",
        mode="before",
    )
    @classmethod
    def _interval(cls, value: str | float) -> float:
        return _setting_seconds(value)

    @field_validator("api_state_peer")
    @classmethod
    def _peer(cls, value: str | None) -> str | None:
        if value:
            check_user_info(value, "the state peer's URL")
        return value

    @field_validator("api_open_data_timezone", "api_foresight_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"not an IANA time zone: {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _marks_outlive_a_full_reload(self) -> ApiSettings:
        # The point saying the latest rows whole records the newest owed mark (api.live.rows):
        # an owed mark expired before a full reload rewrote the rows would make a stale point
        # look whole again, and a start would read rows lacking what that writer stored.
        kept = seconds(self.retention_changes)
        if kept is not None and kept <= self.api_state_full_reload_interval:
            raise ValueError(
                f"CITYSENSE_RETENTION_CHANGES ({self.retention_changes}) must be longer than "
                "CITYSENSE_API_STATE_FULL_RELOAD_INTERVAL "
                f"({self.api_state_full_reload_interval:.0f} s)"
            )
        return self

    @model_validator(mode="after")
    def _silent_after_late(self) -> ApiSettings:
        if self.api_silent_after <= self.api_late_after:
            raise ValueError("api_silent_after must be greater than api_late_after")
        return self
