"""What route functions receive: settings, the shared InfluxDB client and the loaded contract.

The lifespan in api.main puts one `Runtime` on `app.state`; these dependencies hand typed pieces
of it to routes, so routes never touch `app.state` (untyped) themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.contract import Contract
from api.settings import ApiSettings
from citysense.influx import AsyncInfluxClient


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: ApiSettings
    contract: Contract
    influx: AsyncInfluxClient


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


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
ContractDep = Annotated[Contract, Depends(get_contract)]
InfluxDep = Annotated[AsyncInfluxClient, Depends(get_influx)]
