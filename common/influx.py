"""A small InfluxDB client over the v1 HTTP API: line protocol on /write, InfluxQL on /query.

Those two endpoints exist on InfluxDB 1.x, on 2.x (v1 compatibility, virtual DBRP mapping a
bucket to db/rp, token auth) and on 3.x, so one client serves whatever a city runs. /ping serves
health on all three. User input reaches InfluxQL only through `params` (bound parameters).

Two clients share request building and response parsing: `InfluxClient` (sync, for the ingest
writer thread) and `AsyncInfluxClient` (for the API). Both take an optional httpx transport so
unit tests can fake the server while integration tests talk to a real one.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from common.errors import (
    InfluxError,
    InfluxNotFound,
    InfluxPartialWrite,
    InfluxRejected,
    InfluxUnavailable,
)


@dataclass(frozen=True, slots=True)
class Regex:
    """A regular expression bound as a parameter (`tag =~ $name`): InfluxQL's typed parameter
    {"regex": "…"}, as orjson encodes this dataclass, so it is never spliced into the text."""

    regex: str


ParamValue = str | int | float | bool | Regex

_DROPPED = re.compile(r"dropped=(\d+)")
# Names we put into InfluxQL ourselves (measurements, fields, tags) are identifiers from the
# profile contract; quoting still guards against a contract that someday allows more.
_IDENT_ESCAPE = str.maketrans({'"': r"\"", "\\": r"\\"})


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.translate(_IDENT_ESCAPE) + '"'


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    tags: Mapping[str, str]
    columns: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    url: str = "http://127.0.0.1:8086"
    database: str = "citysense"
    token: str | None = None
    timeout: float = 10.0
    # Retention policy: empty means the database default (autogen on 1.x, the bucket on 2.x).
    retention_policy: str = ""

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Token {self.token}"}
        return {}


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_text(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:500]
    # 1.x says {"error": …}; 2.x {"code": …, "message": …}.
    for key in ("error", "message"):
        if isinstance(body, dict) and key in body:
            return str(body[key])[:500]
    return response.text[:500]


# A write some of whose lines were refused and the rest stored: 1.x answers 400, 2.x 422.
_PARTIAL = (400, 422)
# Refusals of some lines of a write (bad, or too large), not of the request as a whole: the
# lines are worth sending again in halves to find which, and only those are given up.
REFUSES_LINES = (*_PARTIAL, 413)

# How InfluxDB 1.x begins its error for a database or retention policy it lacks.
_NOT_THERE = ("database not found", "retention policy not found")


def check_response(response: httpx.Response, *, writing: bool) -> None:
    """Translate an HTTP failure into the CitySense error tree; return quietly on 2xx (a write:
    on 204 alone)."""
    status = response.status_code
    if writing and status != 204 and status < 300:
        # InfluxDB 1.x, 2.x and 3.x answer a stored write 204 (No Content). Any other 2xx is
        # not InfluxDB's (a proxy's or a gateway's page): taken as stored, its readings were
        # acknowledged and lost with no record. An outage instead, retried, then spooled.
        raise InfluxUnavailable(
            f"InfluxDB's answer to a write is {status}, not 204: not InfluxDB's "
            f"({_error_text(response)[:120]!r})",
            status=status,
        )
    if status < 300:
        return
    text = _error_text(response)
    if writing and status == 500 and text.startswith(_NOT_THERE):
        # InfluxDB 1.x answers a write into a policy it lacks with a 500: not worth retrying
        # as if the server were down, the same write fails until an operator creates it.
        raise InfluxNotFound(f"InfluxDB {status}: {text}", status=status)
    if status == 429 or status >= 500:
        raise InfluxUnavailable(
            f"InfluxDB {status}: {text}", status=status, retry_after=_retry_after(response)
        )
    if status == 404:
        raise InfluxNotFound(f"InfluxDB 404: {text}", status=404)
    if writing and status in _PARTIAL and "partial write" in text:
        match = _DROPPED.search(text)
        raise InfluxPartialWrite(
            f"InfluxDB partial write: {text}",
            dropped=int(match.group(1)) if match else None,
            status=status,
        )
    raise InfluxRejected(f"InfluxDB {status}: {text}", status=status)


def _influxql_error(text: str) -> InfluxRejected:
    # InfluxDB 1.x answers a query of a database or retention policy it lacks with 200 and
    # "database not found: x" / "retention policy not found: x".
    if text.startswith(_NOT_THERE):
        return InfluxNotFound(f"InfluxQL error: {text}", status=200)
    return InfluxRejected(f"InfluxQL error: {text}", status=200)


def parse_query(content: bytes) -> list[list[Series]]:
    """Statement results of a /query response; an error in any statement raises InfluxRejected."""
    return _results(_json(content))


def _json(content: bytes) -> Any:
    """A 2xx answer's JSON. Not JSON (a proxy's page in front of InfluxDB, an answer cut
    short): InfluxUnavailable, retried like any outage, not an error no caller expects."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise InfluxUnavailable(
            f"InfluxDB's answer is not JSON ({exc}): {content[:120]!r}"
        ) from exc


def _results(body: Mapping[str, Any]) -> list[list[Series]]:
    if "error" in body:  # a chunked answer reports a failure met midway so
        raise _influxql_error(str(body["error"]))
    out: list[list[Series]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise _influxql_error(str(result["error"]))
        out.append(
            [
                Series(
                    name=s.get("name", ""),
                    tags=s.get("tags") or {},
                    columns=tuple(s.get("columns", ())),
                    values=tuple(tuple(v) for v in s.get("values", ())),
                )
                for s in result.get("series", ())
            ]
        )
    return out


class _Requests:
    """Request building shared by the sync and async clients."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config

    def write_params(self, precision: str, policy: str | None = None) -> dict[str, str]:
        params = {"db": self.config.database, "precision": precision}
        if policy or self.config.retention_policy:
            params["rp"] = policy or self.config.retention_policy
        return params

    def query_data(
        self, query: str, params: Mapping[str, ParamValue] | None, epoch: str | None
    ) -> dict[str, str]:
        data = {"db": self.config.database, "q": query}
        if params:
            data["params"] = orjson.dumps(dict(params)).decode()
        if epoch:
            data["epoch"] = epoch
        return data


def redacted(url: str) -> str:
    """`url` without a password (http://user:***@host:port): safe to log or show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _transport_error(exc: httpx.TransportError, url: str) -> InfluxUnavailable:
    # httpx's own message may quote the URL too: the password goes from both.
    password = urlsplit(url).password
    detail = f"{type(exc).__name__}: {exc}"
    if password:
        detail = detail.replace(password, "***")
    return InfluxUnavailable(f"InfluxDB at {redacted(url)} unreachable: {detail}")


def _release(response: httpx.Response) -> httpx.Response:
    """The response, without the reference cycle httpx leaves between a read response and its
    stream (`Response.stream`, a bound stream holding the response), so that refcounting frees
    the request — and the body it holds, a batch of megabytes — at once rather than at the
    collector's next pass, which ingest runs rarely (ingest.cli; found with gc.DEBUG_SAVEALL).
    Only for a response `post` read whole: its stream is spent, its content kept."""
    response.stream = httpx.ByteStream(b"")
    return response


class InfluxClient:
    """Synchronous client; one per thread that uses it."""

    def __init__(
        self, config: InfluxConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._req = _Requests(config)
        self.config = config
        # This host's clock minus InfluxDB's, from the last answer's Date header (None before
        # one came): see clock_offset.
        self.clock_offset: float | None = None
        self._http = httpx.Client(
            base_url=config.url,
            headers=config.headers(),
            timeout=config.timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = _release(self._http.post(path, **kwargs))
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.config.url) from exc
        offset = clock_offset(response.headers.get("date"), time.time())
        if offset is not None:
            self.clock_offset = offset
        return response

    def ping(self) -> bool:
        try:
            return self._http.get("/ping").status_code == 204
        except httpx.TransportError:
            return False

    def write(self, body: bytes, *, precision: str = "ns", policy: str | None = None) -> None:
        """POST line protocol into retention policy `policy` (default: the database's);
        raises InfluxUnavailable / InfluxPartialWrite / InfluxRejected."""
        params = self._req.write_params(precision, policy)
        response = self._post("/write", params=params, content=body)
        check_response(response, writing=True)

    def query(
        self,
        query: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        epoch: str | None = None,
    ) -> list[list[Series]]:
        response = self._post("/query", data=self._req.query_data(query, params, epoch))
        check_response(response, writing=False)
        return parse_query(response.content)

    def create_database(self) -> None:
        """Idempotent on 1.x; on 2.x/3.x the bucket/database is created by the operator."""
        name = quote_ident(self.config.database)
        response = self._post("/query", data={"q": f"CREATE DATABASE {name}"})
        check_response(response, writing=False)
        parse_query(response.content)


class AsyncInfluxClient:
    """Asynchronous client for the API; share one per process."""

    def __init__(
        self, config: InfluxConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._req = _Requests(config)
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.url,
            headers=config.headers(),
            timeout=config.timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ping(self) -> bool:
        try:
            return (await self._http.get("/ping")).status_code == 204
        except httpx.TransportError:
            return False

    async def write(self, body: bytes, *, precision: str = "ns", policy: str | None = None) -> None:
        """POST line protocol into retention policy `policy` (default: the database's);
        raises InfluxUnavailable / InfluxPartialWrite / InfluxRejected."""
        params = self._req.write_params(precision, policy)
        response = await self._post("/write", params=params, content=body)
        check_response(response, writing=True)

    async def query(
        self,
        query: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        epoch: str | None = None,
        timeout: float | None = None,
    ) -> list[list[Series]]:
        """`timeout` (seconds to connect, and between two network reads) replaces the config's."""
        data = self._req.query_data(query, params, epoch)
        extra = {} if timeout is None else {"timeout": timeout}
        response = await self._post("/query", data=data, **extra)
        check_response(response, writing=False)
        return parse_query(response.content)

    async def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return _release(await self._http.post(path, **kwargs))
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.config.url) from exc

    async def query_chunks(
        self,
        query: str,
        params: Mapping[str, ParamValue] | None = None,
        *,
        epoch: str | None = None,
        chunk_size: int = 10_000,
        timeout: float | None = None,
        compressed: bool = True,
    ) -> AsyncIterator[list[Series]]:
        """The series of a one-statement query, parsed as the answer arrives: InfluxDB's
        `chunked=true` answer is one JSON document per line (at most `chunk_size` rows each, and
        a line per series when grouped), and each network read yields the series of the lines it
        completed. Parsed whole, an answer of 100,000 series is seconds of one blocked event loop
        and hundreds of MB of transient objects. A series longer than a chunk comes in parts.
        `timeout` (seconds to connect, and between two network reads) replaces the config's.

        Compressed (httpx's default), though gzip costs InfluxDB 1.6 a tenth of its CPU on a
        start's full load (100,000 devices): uncompressed, the API's HTTP parser took 2.3 s more
        CPU over the 42 MB of answer, and the start was 1.8 s slower (measured by hand). That
        answer is a line per series, each sent as it is done, which gzip gathers into fewer and
        larger pieces. An answer of few series in large chunks is the other way round:
        `compressed=False`, and at 100,000 devices a start from two writers' latest rows took
        3.3-3.4 s instead of 5.1-5.5 s (three starts each, by hand; gzip cost InfluxDB a third
        more CPU there)."""
        data = {**self._req.query_data(query, params, epoch), "chunked": "true"}
        data["chunk_size"] = str(chunk_size)
        headers = None if compressed else {"Accept-Encoding": "identity"}
        try:
            wait = self.config.timeout if timeout is None else timeout
            async with self._http.stream(
                "POST", "/query", data=data, timeout=wait, headers=headers
            ) as response:
                if response.status_code >= 300:
                    await response.aread()
                    check_response(response, writing=False)
                lines = _Lines()
                async for block in response.aiter_bytes():
                    if series := _chunk_series(lines.feed(block)):
                        yield series
                if series := _chunk_series(lines.rest()):
                    yield series
        except httpx.DecodingError as exc:  # a compressed answer cut or damaged on its way
            raise InfluxUnavailable(f"InfluxDB's answer could not be decoded: {exc}") from exc
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.config.url) from exc


def clock_offset(date: str | None, now: float) -> float | None:
    """`now` minus the time an HTTP Date header says (None: no header, or not a date). The
    header has whole seconds, truncated: the server's time was within the second after it, so
    its middle is taken, and a clock in step reads within about half a second (plus the answer's
    time on the wire). Why ingest watches it: readings without a timestamp take this host's
    time, and every timestamp is checked against it (README, "Operating it")."""
    if not date:
        return None
    try:
        said = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if said.tzinfo is None:
        return None
    return now - (said.timestamp() + 0.5)


class _Lines:
    """Complete lines out of a byte stream, whatever its blocks' boundaries."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the start of a line not yet ended

    def feed(self, block: bytes) -> list[bytes]:
        *complete, tail = block.split(b"\n")
        if complete:
            complete[0] = b"".join((*self._pending, complete[0]))
            self._pending.clear()
        self._pending.append(tail)
        return complete

    def rest(self) -> list[bytes]:
        last = b"".join(self._pending)
        self._pending.clear()
        return [last]


def _chunk_series(lines: list[bytes]) -> list[Series]:
    return [
        series
        for line in lines
        if line.strip()
        for statement in _results(_json(line))
        for series in statement
    ]


def first_series(results: Sequence[Sequence[Series]]) -> list[Series]:
    """The series of the first statement (the common case of one statement per query)."""
    return list(results[0]) if results else []


__all__ = [
    "AsyncInfluxClient",
    "InfluxClient",
    "InfluxConfig",
    "InfluxError",
    "Series",
    "check_response",
    "first_series",
    "parse_query",
    "quote_ident",
]
