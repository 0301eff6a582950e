"""The query options of a SensorThings request (OData's system query options), parsed and
bounded: `$top`, `$skip`, `$count`, `$orderby`, `$select`, `$expand` (nested, each level with
its own options), `$filter` (filtering.py) and `$resultFormat`.

`$expand` has its own small grammar (`Datastreams($top=2;$expand=Observations($top=1))`), which
odata-query does not parse; it is split here by hand, counting parentheses and skipping quoted
text, and may nest at most MAX_EXPAND_DEPTH levels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from odata_query import ast

from api.sta.errors import bad_request
from api.sta.filtering import parse_filter

DEFAULT_TOP = 100
MAX_TOP = 1000  # a larger $top is served in pages of this size, with @iot.nextLink
MAX_SKIP = 10_000_000
MAX_EXPAND_DEPTH = 3
MAX_ITEMS = 20  # in one $expand, $select or $orderby
MAX_OPTION_CHARS = 4000

_NAME = re.compile(r"^(?:@iot\.id|[A-Za-z_][A-Za-z0-9_]{0,63})$")
_ORDER = re.compile(r"^\s*([A-Za-z_@][\w./@]{0,200}?)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)
_INTEGER = re.compile(r"^\d{1,10}$")
KNOWN = ("$top", "$skip", "$count", "$orderby", "$select", "$expand", "$filter", "$resultFormat")


@dataclass(frozen=True)
class Expand:
    path: tuple[str, ...]
    options: Options


@dataclass(frozen=True)
class Options:
    top: int = DEFAULT_TOP
    top_given: bool = False
    skip: int = 0
    count: bool = False
    orderby: tuple[tuple[tuple[str, ...], bool], ...] = ()  # (path, descending)
    select: tuple[str, ...] | None = None
    expand: tuple[Expand, ...] = ()
    filter: ast._Node | None = None
    filter_text: str | None = None
    result_format: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)


def parse_options(raw: Mapping[str, str], depth: int = 0) -> Options:
    """Options from `$name → value`; StaError (400) naming the option that is wrong."""
    for name, value in raw.items():
        if name not in KNOWN:
            raise bad_request(f"unknown query option {name!r}; SensorThings knows {KNOWN}")
        if len(value) > MAX_OPTION_CHARS:
            raise bad_request(f"{name} is longer than {MAX_OPTION_CHARS} characters")
    top = _integer(raw, "$top", DEFAULT_TOP)
    text = raw.get("$filter")
    fmt = raw.get("$resultFormat")
    if fmt is not None and fmt != "dataArray":
        raise bad_request("$resultFormat: only dataArray is supported")
    return Options(
        top=min(top, MAX_TOP),
        top_given="$top" in raw,
        skip=_integer(raw, "$skip", 0, MAX_SKIP),
        count=_boolean(raw.get("$count")),
        orderby=_orderby(raw.get("$orderby")),
        select=_select(raw.get("$select")),
        expand=_expand(raw.get("$expand"), depth),
        filter=None if text is None else parse_filter(text),
        filter_text=text,
        result_format=fmt,
        raw=dict(raw),
    )


def _integer(raw: Mapping[str, str], name: str, default: int, most: int | None = None) -> int:
    text = raw.get(name)
    if text is None:
        return default
    if not _INTEGER.match(text.strip()):
        raise bad_request(f"{name} must be a non-negative integer of at most 10 digits")
    value = int(text)
    if most is not None and value > most:
        raise bad_request(f"{name} must be at most {most}")
    return value


def _boolean(text: str | None) -> bool:
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise bad_request("$count must be true or false")


def _items(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside parentheses and quoted strings."""
    items, depth, quoted, start = [], 0, False, 0
    for at, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"unbalanced parentheses in {text[:80]!r}")
        elif not quoted and depth == 0 and char == separator:
            items.append(text[start:at])
            start = at + 1
    if depth != 0 or quoted:
        raise bad_request(f"unbalanced parentheses or quotes in {text[:80]!r}")
    items.append(text[start:])
    if len(items) > MAX_ITEMS:
        raise bad_request(f"more than {MAX_ITEMS} items in one option")
    return [item.strip() for item in items]


def _select(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = _items(text, ",")
    for name in names:
        if not _NAME.match(name):
            raise bad_request(f"$select: {name[:80]!r} is not a property name")
    return tuple("id" if n == "@iot.id" else n for n in names)


def _orderby(text: str | None) -> tuple[tuple[tuple[str, ...], bool], ...]:
    if text is None:
        return ()
    out = []
    for item in _items(text, ","):
        match = _ORDER.match(item)
        if match is None:
            raise bad_request(f"$orderby: {item[:80]!r} is not `property [asc|desc]`")
        path = tuple("id" if p == "@iot.id" else p for p in match.group(1).split("/"))
        if not all(_NAME.match(p) for p in path):
            raise bad_request(f"$orderby: {item[:80]!r} is not a property path")
        out.append((path, (match.group(2) or "asc").lower() == "desc"))
    return tuple(out)


def _expand(text: str | None, depth: int) -> tuple[Expand, ...]:
    if text is None:
        return ()
    if depth >= MAX_EXPAND_DEPTH:
        raise bad_request(f"$expand nests deeper than {MAX_EXPAND_DEPTH} levels")
    out = []
    for item in _items(text, ","):
        name, _, inner = item.partition("(")
        if inner and not inner.endswith(")"):
            raise bad_request(f"$expand: {item[:80]!r} is not `Name(options)`")
        path = tuple(p.strip() for p in name.split("/"))
        if len(path) > MAX_EXPAND_DEPTH - depth or not all(_NAME.match(p) for p in path):
            raise bad_request(f"$expand: {name[:80]!r} is not a navigation path")
        options = _inner_options(inner[:-1], depth + len(path)) if inner else Options()
        out.append(Expand(path, options))
    return tuple(out)


def _inner_options(text: str, depth: int) -> Options:
    raw: dict[str, str] = {}
    for part in _items(text, ";"):
        name, equals, value = part.partition("=")
        if not equals:
            raise bad_request(f"$expand: option {part[:80]!r} is not `$name=value`")
        raw[name.strip()] = value.strip()
    return parse_options(raw, depth)
