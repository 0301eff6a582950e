"""Another replica's latest state, for a replica that has none of its own (api.live.service).

A new replica, or one whose data folder was lost, would load every device's latest reading from
InfluxDB: seconds of InfluxDB's CPU per 100,000 devices (api.live.snapshot). A running replica
holds that state already; it hands it over as a snapshot (GET /state/snapshot, api.routes.state)
encoded on demand, the same bytes it writes to its folder, checked the same way on arrival
(checksum, version, registry and database). Errors of the transfer are translated here, once:
`PeerError` says why in words, never with the token.
"""

from __future__ import annotations

import httpx

from common.influx import redacted

PATH = "/state/snapshot"


class PeerError(Exception):
    """The peer's state could not be had: unreachable, refused, too large, cut short."""


async def fetch_state(
    url: str,
    token: str | None,
    *,
    timeout: float,
    max_bytes: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytearray:
    """The peer's snapshot bytes, read whole (at most `max_bytes`; not copied once more into
    `bytes`: at a million devices that is a hundred MB at the start's peak)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    where = f"{redacted(url)}{PATH}"
    body = bytearray()
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport) as client,
            client.stream("GET", PATH, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise PeerError(f"{where} answered {response.status_code}")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise PeerError(f"{where} sent more than {max_bytes} bytes")
    except httpx.HTTPError as exc:
        # The token travels in a header httpx's text never quotes; the URL's password, if any,
        # the caller's scrubber masks (its text may quote the URL).
        raise PeerError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return body
