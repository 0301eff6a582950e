"""What route functions receive: settings, the shared InfluxDB client, the loaded contract, and
who is asking.

The lifespan in api.main puts one `Runtime` on `app.state`; these dependencies hand typed pieces
of it to routes, so routes never touch `app.state` (untyped) themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.compute.cells import CellCache
from api.compute.keeper import RollupKeeper
from api.compute.warm import Warmer
from api.core.contract import Contract
from api.core.settings import ApiSettings
from api.core.supervise import Supervisor
from api.core.tokens import ANONYMOUS, Principal, TokenBook, hash_token
from api.foresight.schedule import Scheduler
from api.live.service import Live
from api.observe import PRINCIPAL
from common.influx import AsyncInfluxClient


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: ApiSettings
    contract: Contract
    influx: AsyncInfluxClient
    # Principals by SHA-256 of their token, kept current with the tokens file; None when the
    # operator turned authentication off.
    tokens: TokenBook | None
    live: Live
    cells: CellCache
    warmer: Warmer
    supervisor: Supervisor
    foresight: Scheduler
    # Runs in the API only with CITYSENSE_API_ROLLUPS_KEEP; a deployment runs `citysense rollups`.
    rollups: RollupKeeper


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the app's lifespan has not run: start it with its lifespan enabled")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> ApiSettings:
    return runtime.settings


def get_contract(runtime: RuntimeDep) -> Contract:
    return runtime.contract


def get_influx(runtime: RuntimeDep) -> AsyncInfluxClient:
    return runtime.influx


def get_live(runtime: RuntimeDep) -> Live:
    return runtime.live


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
ContractDep = Annotated[Contract, Depends(get_contract)]
InfluxDep = Annotated[AsyncInfluxClient, Depends(get_influx)]
LiveDep = Annotated[Live, Depends(get_live)]

# auto_error=False: a missing or malformed header gets our 401 (with WWW-Authenticate), and the
# scheme still appears in the OpenAPI document.
_bearer = HTTPBearer(
    auto_error=False, description="An API token from the operator: `Authorization: Bearer <token>`"
)
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def authenticate(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = _principal(runtime, credentials)
    request.scope[PRINCIPAL] = principal.name  # for the access log (api.observe)
    return principal


def _principal(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if runtime.tokens is None:
        return ANONYMOUS
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers=_UNAUTHORIZED)
    # Only the hash is looked up, and neither token nor hash is ever logged or echoed.
    principal = runtime.tokens.get(hash_token(credentials.credentials))
    if principal is None:
        raise HTTPException(401, "invalid token", headers=_UNAUTHORIZED)
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
