"""Answering a SensorThings request: the resource path walked over the graph, the query options
applied, the JSON built with its `@iot.selfLink`, `@iot.navigationLink` and `@iot.nextLink`.

Entities of the registry are filtered, ordered and paged in memory (evaluate.py); Observations
are paged by InfluxDB (observations.py). Datastreams' phenomenonTime is read for a whole answer
at once, after the answer is built, in one batch of statements.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from api.core.contract import Contract
from api.core.tokens import Principal
from api.sta import entities
from api.sta.catalog import Ref, catalog_of
from api.sta.errors import bad_request, not_found
from api.sta.evaluate import PROPERTIES, Evaluator, check_filter, check_path
from api.sta.graph import NAVIGATION, Graph
from api.sta.observations import Series, read_one, read_page, spans
from api.sta.options import Expand, Options, parse_options
from api.sta.paths import ResourcePath, link, parse_path
from api.sta.pushdown import datastream_of
from common.influx import AsyncInfluxClient

CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/data-array/data-array",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/receive-updates-via-mqtt/receive-updates",
]
TOPIC = "v1.1/Datastreams('<id>')/Observations"


@dataclass(frozen=True, slots=True)
class StaRequest:
    base: str  # the service root's absolute URL, …/sta/v1.1
    path: str  # below the root: Things('x')/Datastreams
    query: Mapping[str, str]  # the $options as sent


@dataclass
class Answer:
    """A JSON body, or the raw text of a `$value`."""

    body: dict[str, Any] | None = None
    text: str | None = None


def service_root(base: str) -> dict[str, Any]:
    return {
        "value": [{"name": name, "url": f"{base}/{name}"} for name in sorted(NAVIGATION)],
        "serverSettings": {
            "conformance": CONFORMANCE,
            CONFORMANCE[-1]: {"topics": [TOPIC]},
        },
    }


async def answer(
    request: StaRequest, principal: Principal, contract: Contract, influx: AsyncInfluxClient
) -> Answer:
    path = parse_path(request.path)
    options = parse_options(request.query)
    graph = Graph(catalog_of(contract), principal)
    job = _Job(graph, influx, request)
    return await job.run(path, options)


@dataclass
class _Job:
    graph: Graph
    influx: AsyncInfluxClient
    request: StaRequest
    # Datastream JSON whose phenomenonTime is filled in at the end, in one batch.
    pending: list[tuple[dict[str, Any], Ref]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.request.base

    async def run(self, path: ResourcePath, options: Options) -> Answer:
        kind, ref, last = self._walk(path)
        if ref is None:
            body = await self._collection(kind, last, options, path)
        else:
            body = await self._single(ref, path, options)
        if body.text is None:
            await self._fill_spans()
        return body

    def _walk(self, path: ResourcePath) -> tuple[str, Ref | None, Ref | None]:
        """The set the path ends in, the entity it names (None for a collection) and the
        entity whose navigation property leads to that collection."""
        first = path.segments[0]
        kind, ref, owner = first.name, None, None
        if first.id is not None:
            ref = self._find(kind, first.id)
        for segment in path.segments[1:]:
            if ref is None:
                raise bad_request(f"{kind} is a collection: name one entity before {segment.name}")
            if segment.name in PROPERTIES.get(kind, ()) and segment is path.segments[-1]:
                break  # a property of `ref`, answered by _single
            target = NAVIGATION.get(kind, {}).get(segment.name)
            if target is None or segment.id is not None:
                raise bad_request(f"{kind} has no navigation property {segment.name!r}")
            kind, owner = target[0], ref
            ref = None if target[1] else self._one(ref, segment.name)
        return kind, ref, owner

    def _find(self, kind: str, ident: str) -> Ref:
        ref = self.graph.find(kind, ident)
        if ref is None:
            raise not_found(f"no {kind} with id {ident!r}")
        return ref

    def _one(self, ref: Ref, nav: str) -> Ref:
        found = next(iter(self.graph.related(ref, nav)), None)
        if found is None:
            raise not_found(f"{ref.kind}('{ref.id}') has no {nav}")
        return found

    async def _single(self, ref: Ref, path: ResourcePath, options: Options) -> Answer:
        last = path.segments[-1]
        body = await self._entity(ref, options)
        await self._fill_spans()
        if last.name in PROPERTIES.get(ref.kind, ()) and last.id is None and len(path.segments) > 1:
            name = "@iot.id" if last.name == "id" else last.name
            value = body.get(name)
            if path.value:
                return Answer(text="" if value is None else str(value))
            return Answer({last.name: value})
        if path.ref:
            return Answer({"@iot.selfLink": link(self.base, ref)})
        return Answer(body)

    async def _entity(self, ref: Ref, options: Options) -> dict[str, Any]:
        if ref.kind == "Observations":
            series, time_ns = self._series(ref), int(ref.key[2])
            result = await read_one(self.influx, series, time_ns)
            if result is None:
                raise not_found(f"no Observations with id {ref.id!r}")
            props = entities.observation(time_ns, result)
        else:
            props = entities.properties(self.graph.catalog, ref)
        return await self._json(ref, props, options)

    def _series(self, ref: Ref) -> Series:
        device = self.graph.catalog.device(ref.key[0])
        assert device is not None
        return Series(device, self.graph.catalog.profiles[device.profile], ref.key[1])

    async def _json(self, ref: Ref, props: dict[str, Any], options: Options) -> dict[str, Any]:
        select = options.select
        _check_select(ref.kind, select)
        out: dict[str, Any] = {}
        if select is None or "id" in select:
            out["@iot.id"] = ref.id
            out["@iot.selfLink"] = self_link = link(self.base, ref)
        else:
            self_link = link(self.base, ref)
        for name, value in props.items():
            if select is None or name in select:
                out[name] = value
        for nav in NAVIGATION[ref.kind]:
            if select is None or nav in select:
                out[f"{nav}@iot.navigationLink"] = f"{self_link}/{nav}"
        if ref.kind == "Datastreams" and "phenomenonTime" in out:
            self.pending.append((out, ref))
        for expand in _merged(options.expand):
            await self._expand(ref, expand, out)
        return out

    async def _expand(self, ref: Ref, expand: Expand, out: dict[str, Any]) -> None:
        nav = expand.path[0]
        target = NAVIGATION[ref.kind].get(nav)
        if target is None:
            raise bad_request(f"$expand: {ref.kind} has no navigation property {nav!r}")
        kind, many = target
        if not many:
            out[nav] = await self._entity(self._one(ref, nav), expand.options)
            return
        page = await self._page(kind, ref, expand.options, f"{link(self.base, ref)}/{nav}")
        out[nav] = page["value"]
        for key in ("@iot.count", "@iot.nextLink"):
            if key in page:
                out[nav + key] = page[key]

    async def _collection(
        self, kind: str, owner: Ref | None, options: Options, path: ResourcePath
    ) -> Answer:
        page = await self._page(kind, owner, options, f"{self.base}/{self.request.path.strip('/')}")
        if path.ref:
            page["value"] = [{"@iot.selfLink": item["@iot.selfLink"]} for item in page["value"]]
        return Answer(page)

    async def _page(
        self, kind: str, owner: Ref | None, options: Options, url: str
    ) -> dict[str, Any]:
        """A page of `kind` (related to `owner`, if given) as the options select it; `url`
        is where the collection lives, for its @iot.nextLink."""
        if kind == "Observations":
            return await self._observations(owner, options, url)
        source = (
            self.graph.related(owner, _nav_to(owner, kind))
            if owner
            else (self.graph.collection(kind))
        )
        refs, count, more = self._select_refs(kind, source, options)
        body: dict[str, Any] = {}
        if count is not None:
            body["@iot.count"] = count
        props = entities.properties
        body["value"] = [
            await self._json(ref, props(self.graph.catalog, ref), options) for ref in refs
        ]
        if more:
            body["@iot.nextLink"] = _next_link(url, options)
        return body

    def _select_refs(
        self, kind: str, source: Iterable[Ref], options: Options
    ) -> tuple[list[Ref], int | None, bool]:
        """The page of `source` the options ask for, the count (with $count) and whether
        more follow."""
        evaluator = Evaluator(self.graph)
        if options.filter is not None:
            check_filter(kind, options.filter)
            tree = options.filter
            source = (ref for ref in source if evaluator.matches(ref, tree))
        if options.orderby:
            source = _ordered(kind, source, options, evaluator)
        if options.count:
            items = list(source)
            window = items[options.skip : options.skip + options.top]
            return window, len(items), len(items) > options.skip + options.top
        window = list(itertools.islice(source, options.skip, options.skip + options.top + 1))
        return window[: options.top], None, len(window) > options.top

    async def _observations(self, owner: Ref | None, options: Options, url: str) -> dict[str, Any]:
        options, series_ref = self._observation_series(owner, options)
        series = self._series(series_ref)
        page = await read_page(self.influx, series, options, limit=options.top + 1)
        rows, more = page.rows[: options.top], len(page.rows) > options.top
        body: dict[str, Any] = {}
        if page.count is not None:
            body["@iot.count"] = page.count
        if options.result_format == "dataArray":
            body["value"] = [self._data_array(series_ref, rows, options)]
        else:
            body["value"] = [
                await self._json(
                    Ref("Observations", (*series_ref.key, str(t))),
                    entities.observation(t, r),
                    options,
                )
                for t, r in rows
            ]
        if more:
            body["@iot.nextLink"] = _next_link(url, options)
        return body

    def _observation_series(self, owner: Ref | None, options: Options) -> tuple[Options, Ref]:
        """The Datastream whose Observations are asked for: the path's, or a top-level
        `Datastream/id eq '…'` of the filter (InfluxDB reads one series at a time)."""
        if owner is not None and owner.kind == "Datastreams":
            return options, owner
        named, rest = (None, None) if options.filter is None else datastream_of(options.filter)
        if owner is None and named is not None:
            ref = self.graph.find("Datastreams", named)
            if ref is None:
                raise not_found(f"no Datastreams with id {named!r}")
            return _with_filter(options, rest), ref
        raise bad_request(
            "Observations are read one Datastream at a time: ask for "
            "Datastreams('<id>')/Observations, or filter on Datastream/id eq '<id>'"
        )

    def _data_array(self, ds: Ref, rows: list[tuple[int, Any]], options: Options) -> dict[str, Any]:
        components = list(options.select or ("id", "phenomenonTime", "resultTime", "result"))
        _check_select("Observations", tuple(components))
        arrays = []
        for time_ns, result in rows:
            props = {"id": f"{ds.id}:{time_ns}", **entities.observation(time_ns, result)}
            arrays.append([props.get(name) for name in components])
        item = {
            "Datastream@iot.navigationLink": link(self.base, ds),
            "components": components,
            "dataArray@iot.count": len(arrays),
            "dataArray": arrays,
        }
        return item

    async def _fill_spans(self) -> None:
        if not self.pending:
            return
        catalog = self.graph.catalog
        wanted = []
        for _, ref in self.pending:
            device = catalog.device(ref.key[0])
            assert device is not None
            wanted.append((device, catalog.profiles[device.profile], ref.key[1]))
        found = await spans(self.influx, wanted)
        for out, ref in self.pending:
            out["phenomenonTime"] = entities.span_text(found.get((ref.key[0], ref.key[1])))
        self.pending.clear()


def _next_link(url: str, options: Options) -> str:
    query = dict(options.raw)
    query["$skip"] = str(options.skip + options.top)
    query["$top"] = str(options.top)
    return f"{url}?{urlencode(query)}"


def _nav_to(owner: Ref, kind: str) -> str:
    for nav, (target, _) in NAVIGATION[owner.kind].items():
        if target == kind:
            return nav
    raise bad_request(f"{owner.kind} does not lead to {kind}")


def _check_select(kind: str, select: tuple[str, ...] | None) -> None:
    for name in select or ():
        if name not in PROPERTIES[kind] and name not in NAVIGATION[kind]:
            raise bad_request(f"$select: {kind} has no property {name!r}")


def _merged(expands: tuple[Expand, ...]) -> list[Expand]:
    """`A/B` as `A($expand=B)`, merged with `A`'s own options when `A` is named too."""
    merged: dict[str, tuple[Options, list[Expand]]] = {}
    for item in expands:
        head = item.path[0]
        options, inner = merged.get(head, (Options(), []))
        if len(item.path) > 1:
            inner.append(Expand(item.path[1:], item.options))
        else:
            options = item.options
        merged[head] = (options, inner)
    return [
        Expand((head,), _with_expand(options, options.expand + tuple(inner)))
        for head, (options, inner) in merged.items()
    ]


def _with_expand(options: Options, expand: tuple[Expand, ...]) -> Options:
    return Options(**{**options.__dict__, "expand": expand})


def _with_filter(options: Options, tree: Any) -> Options:
    return Options(**{**options.__dict__, "filter": tree})


def _ordered(kind: str, source: Iterable[Ref], options: Options, ev: Evaluator) -> list[Ref]:
    for path, _ in options.orderby:
        check_path(kind, path)
    items = list(source)
    # Stable sorts from the last key to the first: each key in its own direction; nulls first.
    for path, descending in reversed(options.orderby):
        try:
            items.sort(key=functools.partial(_sort_key, ev, path), reverse=descending)
        except TypeError:
            raise bad_request(f"$orderby: {'/'.join(path)} mixes types") from None
    return items


def _sort_key(ev: Evaluator, path: tuple[str, ...], ref: Ref) -> tuple[bool, Any]:
    value = ev.resolve(ref, path)
    if isinstance(value, dict | list):
        raise bad_request("$orderby: order by a property holding a single value")
    return (value is not None, value)
