"""Timed requests: one, or a series of which a failure is recorded and the rest go on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from bench.api.figures import Timings


class Failed(Exception):
    pass


def timed_get(
    client: httpx.Client, path: str, params: dict[str, Any]
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(path, params=params)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise Failed(f"{response.status_code} {response.text[:300]}")
    return seconds, response


def run_requests(
    client: httpx.Client, path: str, params: Iterator[dict[str, Any]] | list[dict[str, Any]],
    *, warmup: int = 1, check: Callable[[httpx.Response], None] | None = None,
) -> Timings:  # fmt: skip
    """Time each request; the first `warmup` are not counted. A failed request (an error status,
    a timeout) is recorded and the rest go on."""
    t = Timings()
    for n, p in enumerate(params):
        try:
            seconds, response = timed_get(client, path, p)
        except (Failed, httpx.TimeoutException) as exc:
            t.errors.append(str(exc)[:160])
            continue
        if check is not None:
            check(response)
        if n >= warmup:
            t.add(seconds, len(response.content))
    return t
