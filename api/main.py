"""The FastAPI application: `create_app()` builds it, its lifespan loads the contract and opens
the one InfluxDB client the process shares.

    uvicorn --factory api.main:create_app     (settings from CITYSENSE_* variables)
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors
from api.compute.cells import CellCache
from api.compute.keeper import RollupKeeper
from api.compute.warm import Warmer, parse_questions
from api.core.contract import Contract
from api.core.scrub import Scrubber, secrets_of
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.core.tokens import TokenBook, watch
from api.deps import Runtime
from api.foresight.schedule import Scheduler
from api.live.service import Live
from api.observe import AccessLog, Metrics, RuntimeCollector
from api.routes import api_router
from api.sta.mqtt import ObservationPublisher
from common import __version__
from common.errors import ConfigError
from common.influx import AsyncInfluxClient
from common.process import release_free_memory
from device_profiles import ContractError

logger = logging.getLogger(__name__)

DOCS_ASSETS = "/docs-assets"

DESCRIPTION = """Latest state, history and district summaries of a city's IoT devices
(streetlights, pipe-network sensors, power meters), from the readings CitySense ingests.

Times are RFC 3339 in UTC. Which devices exist, and which fields each kind of device has, come
from the device-profile contract (YAML profiles and the device registry) the service runs with.
"""


def _access(config: ApiSettings, contract: Contract) -> TokenBook | None:
    """Principals by token hash, or None when authentication is explicitly off. Neither a
    forgotten setting nor a broken file may leave a deployment open: both refuse to start."""
    if config.api_auth == "off":
        logger.warning(
            "authentication is OFF (CITYSENSE_API_AUTH=off): every client reads everything; "
            "never expose this API beyond a development machine"
        )
        return None
    if config.api_tokens is None:
        message = (
            "no tokens file: set CITYSENSE_API_TOKENS to the operator's tokens file (see "
            "api/core/tokens.py), or CITYSENSE_API_AUTH=off for a development deployment"
        )
        logger.error("refusing to start: %s", message)
        raise ConfigError(message)
    try:
        tokens = TokenBook(config.api_tokens, contract.profiles, contract.districts)
    except ConfigError as exc:
        logger.error("refusing to start: %s", exc)
        raise
    logger.info("%d API tokens loaded from %s", len(tokens), config.api_tokens)
    return tokens


def _contract(config: ApiSettings) -> Contract:
    try:
        profiles, registry = config.load_contract()
    except ContractError as exc:
        # Serving with a broken contract would answer 404 for devices that exist, or
        # query fields that do not: refuse to start and say exactly what is wrong.
        logger.error("refusing to start, the device contract is invalid:\n%s", exc)
        raise
    return Contract.build(profiles, registry)


def _runtime(
    config: ApiSettings,
    scrub: Scrubber,
    *,
    transport: httpx.AsyncBaseTransport | None,
    supervisor: Supervisor,
    contract: Contract | None,
    peer_transport: httpx.AsyncBaseTransport | None,
) -> Runtime:
    """Everything the routes share, built and checked before the first request."""
    contract = contract if contract is not None else _contract(config)
    tokens = _access(config, contract)
    influx = AsyncInfluxClient(config.influx, transport=transport)
    cells = CellCache(config.api_aggregate_cells, config.api_aggregate_max_staleness)
    try:
        questions = parse_questions(config.api_aggregate_warm, contract, config)
    except ConfigError as exc:
        logger.error("refusing to start: %s", exc)
        raise
    warmer = Warmer(
        questions,
        settings=config,
        contract=contract,
        influx=influx,
        cache=cells,
        supervisor=supervisor,
    )
    live = Live(
        config, contract, influx, scrub, transport, supervisor=supervisor, peer=peer_transport
    )
    return Runtime(
        settings=config,
        contract=contract,
        influx=influx,
        tokens=tokens,
        live=live,
        cells=cells,
        warmer=warmer,
        supervisor=supervisor,
        foresight=Scheduler(config, contract, influx, live.alarms, supervisor),
        rollups=RollupKeeper(
            settings=config, contract=contract, influx=influx, supervisor=supervisor
        ),
    )


def create_app(
    settings: ApiSettings | None = None,
    *,
    influx_transport: httpx.AsyncBaseTransport | None = None,
    on_failure: Callable[[], None] | None = None,
    contract: Contract | None = None,
    peer_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The app; `influx_transport` replaces the network under the InfluxDB client in tests,
    `peer_transport` the one to the replica named by `api_state_peer` (api.live.peer);
    `on_failure` is called once if a background task or thread dies (api.core.supervise);
    `contract`, when the caller loaded it already (`citysense api` checks it before serving),
    is not loaded again — at a million devices that is seconds of start-up."""
    config = settings if settings is not None else ApiSettings()
    supervisor = Supervisor(on_failure)
    scrub = Scrubber(secrets_of(config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = app.state.runtime = _runtime(
            config,
            scrub,
            transport=influx_transport,
            supervisor=supervisor,
            contract=contract,
            peer_transport=peer_transport,
        )
        registry = runtime.contract.registry
        logger.info(
            "serving %d devices of %d profiles in %d districts; InfluxDB %s, database %s",
            len(registry.devices),
            len(runtime.contract.profiles),
            len(registry.districts),
            scrub(config.influx_url),
            config.influx_db,
        )
        # SensorThings' MQTT extension: stored readings out as Observations (api.sta.mqtt).
        observations = ObservationPublisher(config.mqtt, runtime.contract.profiles)
        runtime.live.listeners.append(observations.publish)
        observations.start()
        gc.disable()  # as api.cli, for an app created in a process of its own (tests)
        try:
            await runtime.live.start()
        finally:
            gc.enable()
        release_free_memory()  # what the start's load parsed and let go (common.process)
        if config.api_gc_freeze:
            # What start-up built (contract, registry, latest state) lives as long as the
            # process: left to the cyclic collector, each full collection walks all of it, 73-131
            # ms for the contract alone at 100,000 devices (measured), and the request or live
            # event that triggers one waits. Frozen, collections walk only what came later.
            gc.freeze()
            logger.info(
                "%d start-up objects exempted from garbage collection", gc.get_freeze_count()
            )
        app.state.metrics.watch_gc()
        runtime.warmer.start()
        runtime.rollups.start()
        runtime.foresight.start()
        runtime.live.serving()
        watching = None
        if runtime.tokens is not None:
            every = config.api_tokens_reload_every
            watching = supervisor.start(watch(runtime.tokens, every), "citysense-tokens")
        try:
            yield
        finally:
            if watching is not None:
                watching.cancel()
            await runtime.warmer.stop()
            await runtime.rollups.stop()
            await runtime.foresight.stop()
            await runtime.live.stop()
            observations.stop()
            await runtime.influx.aclose()
            app.state.metrics.unwatch_gc()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets the API serves itself: a city's
    # operations network has no route to a public CDN.
    app = FastAPIOffline(
        title="CitySense API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    errors.install(app, scrub)
    app.state.metrics = metrics = Metrics()
    metrics.registry.register(RuntimeCollector(lambda: _gauges(app)))
    app.add_middleware(AccessLog, metrics=metrics)
    app.include_router(api_router)
    return app


def _gauges(app: FastAPI) -> dict[str, tuple[str, float]]:
    runtime = getattr(app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        return {}
    live = runtime.live
    return {
        "devices": ("Registered devices in the live state", len(live.state.devices)),
        "state_loaded": ("1 once the latest state was loaded from InfluxDB", live.state.loaded),
        "alarms_replayed": (
            "1 once the stored alarms were read back (until then none is judged)",
            live.alarms.replayed,
        ),
        "stream_clients": ("Server-Sent Events clients connected", live.hub.clients),
        "alarms_active": ("Alarms active now", len(live.alarms.active)),
        "alarm_events_waiting": ("Alarm events not yet stored", len(live.alarms.outbox)),
        "alarm_events_dropped": (
            "Alarm events dropped while InfluxDB was away",
            live.alarms.outbox.dropped,
        ),
        "tokens_file_broken": (
            "1 while the tokens file changed and does not load (the last good tokens serve)",
            runtime.tokens is not None and runtime.tokens.broken,
        ),
        "alarm_events_refused": (
            "Alarm events InfluxDB refused (a field-type conflict, a line too large), dropped",
            live.writer.refused,
        ),
        "feed_subscribed": (
            "1 while the broker grants the state feed's subscription",
            live.feed is not None and live.feed.subscribed.is_set(),
        ),
        "feed_trusted": (
            "1 while the state feed vouches for what it brought (api.live.coverage)",
            live.coverage.trusted,
        ),
        "feed_losses": ("State-feed messages known or feared lost", live.coverage.losses),
        "state_catch_ups": ("Catch-ups of the latest state from InfluxDB", live.caught_up),
        "state_parts_queried": (
            "(profile, district) parts the catch-ups queried again",
            live.parts_queried,
        ),
        "aggregate_cells_kept": ("Aggregate cells kept", len(runtime.cells)),
        "rollups_ready": (
            "1 once the rollup keeper computed every window of the readings (0 if not keeping)",
            runtime.rollups.progress.ready,
        ),
        "rollup_windows_pending": (
            "Rollup units (a district and day) the keeper found to compute and has not yet",
            runtime.rollups.progress.pending,
        ),
        "rollup_windows_computed": (
            "Rollup windows computed since start",
            runtime.rollups.progress.computed,
        ),
        "rollups_backfill_seconds": (
            "Seconds the keeper's first whole round took (the backfill)",
            runtime.rollups.progress.backfill_s,
        ),
        "background_crashes": ("Background tasks or threads that died", runtime.supervisor.crashes),
    }
