"""`$filter` and `$orderby` evaluated over the entities the registry defines (Things, Locations,
FeaturesOfInterest, Sensors, ObservedProperties, Datastreams): they live in memory, so filtering
them in Python reads no second copy of anything. Observations never come here: their filter is
translated to InfluxQL (pushdown.py).

Paths are checked against the entity set before any entity is read, so an unknown property is a
400 even over an empty collection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from odata_query import ast

from api.sta import entities, geo
from api.sta.catalog import Ref
from api.sta.errors import bad_request
from api.sta.filtering import STA, children
from api.sta.graph import NAVIGATION, Graph

PROPERTIES: dict[str, tuple[str, ...]] = {
    "Things": ("id", "name", "description", "properties"),
    "Locations": ("id", "name", "description", "encodingType", "location"),
    "HistoricalLocations": ("id", "time"),
    "FeaturesOfInterest": ("id", "name", "description", "encodingType", "feature"),
    "Sensors": ("id", "name", "description", "encodingType", "metadata", "properties"),
    "ObservedProperties": ("id", "name", "definition", "description", "properties"),
    "Datastreams": (
        "id",
        "name",
        "description",
        "unitOfMeasurement",
        "observationType",
        "observedArea",
        "phenomenonTime",
        "resultTime",
        "properties",
    ),
    "Observations": ("id", "phenomenonTime", "resultTime", "result"),
}
OBJECTS = ("properties", "unitOfMeasurement", "location", "feature", "observedArea")
IN_INFLUXDB = {("Datastreams", "phenomenonTime"), ("Datastreams", "resultTime")}
# The one to-many navigation a filter may follow: every Thing has exactly one Location.
SINGLE = {("Things", "Locations")}


def path_of(node: ast._Node) -> tuple[str, ...] | None:
    """`a/b/c` as ("a", "b", "c"), or None if `node` is no property path."""
    if isinstance(node, ast.Identifier):
        return None if node.namespace else (node.name,)
    if isinstance(node, ast.Attribute):
        owner = path_of(node.owner)
        return None if owner is None else (*owner, node.attr)
    return None


def check_path(kind: str, path: tuple[str, ...]) -> None:
    """StaError (400) unless `path` names a property of `kind` that memory holds."""
    name, rest = path[0], path[1:]
    target = NAVIGATION.get(kind, {}).get(name)
    if target is not None:
        many = target[1] and (kind, name) not in SINGLE
        if many or target[0] == "Observations":
            raise bad_request(f"{kind}: a filter or order cannot follow the collection {name}")
        if not rest:
            raise bad_request(f"{kind}: {name} is an entity; name one of its properties")
        check_path(target[0], rest)
        return
    if name not in PROPERTIES.get(kind, ()):
        known = ", ".join(PROPERTIES.get(kind, ()) + tuple(NAVIGATION.get(kind, {})))
        raise bad_request(f"{kind} has no property {name!r}; it has {known}")
    if (kind, name) in IN_INFLUXDB:
        raise bad_request(f"{kind}/{name} cannot be filtered or ordered on (it is computed)")
    if rest and name not in OBJECTS:
        raise bad_request(f"{kind}/{name} has no sub-properties")


def check_filter(kind: str, tree: ast._Node) -> None:
    stack = [tree]
    while stack:
        node = stack.pop()
        path = path_of(node)
        if path is not None:
            check_path(kind, path)
        elif isinstance(node, ast.Identifier | ast.Attribute):
            raise bad_request(f"$filter: {node} is not a property path")
        else:
            stack.extend(children(node))


class Evaluator:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._props: dict[Ref, dict[str, Any]] = {}

    def resolve(self, ref: Ref, path: tuple[str, ...]) -> Any:
        name, rest = path[0], path[1:]
        if name == "id":
            return ref.id
        if name in NAVIGATION.get(ref.kind, {}):
            target = next(iter(self.graph.related(ref, name)), None)
            return None if target is None else self.resolve(target, rest)
        props = self._props.get(ref)
        if props is None:
            if len(self._props) > 10_000:
                self._props.clear()
            props = self._props[ref] = entities.properties(self.graph.catalog, ref)
        value = props.get(name)
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def matches(self, ref: Ref, tree: ast._Node) -> bool:
        return self.value(ref, tree) is True

    def value(self, ref: Ref, node: ast._Node) -> Any:
        path = path_of(node)
        if path is not None:
            return self.resolve(ref, path)
        if isinstance(node, ast._Literal):
            return literal(node)
        if isinstance(node, ast.BoolOp):
            left = self.value(ref, node.left) is True
            if isinstance(node.op, ast.And):
                return left and self.value(ref, node.right) is True
            return left or self.value(ref, node.right) is True
        if isinstance(node, ast.UnaryOp):
            operand = self.value(ref, node.operand)
            if isinstance(node.op, ast.Not):
                return None if operand is None else operand is not True
            return None if operand is None else -_number(operand)
        if isinstance(node, ast.Compare):
            return compare(node.comparator, self.value(ref, node.left), self.value(ref, node.right))
        if isinstance(node, ast.BinOp):
            return arithmetic(node.op, self.value(ref, node.left), self.value(ref, node.right))
        if isinstance(node, ast.Call):
            return call(node.func, [self.value(ref, arg) for arg in node.args])
        raise bad_request(f"$filter: {type(node).__name__} is not supported")


def literal(node: ast._Node) -> Any:
    if isinstance(node, ast.Null):
        return None
    if isinstance(node, ast.Boolean):
        return node.val.lower() == "true"
    if isinstance(node, ast.Integer):
        return int(node.val)
    if isinstance(node, ast.Float):
        return float(node.val)
    if isinstance(node, ast.String):
        return node.val
    if isinstance(node, ast.DateTime):
        return _datetime(node.val)
    if isinstance(node, ast.Date):
        return date.fromisoformat(node.val)
    if isinstance(node, ast.Geography):
        return geo.from_wkt(node.val)
    if isinstance(node, ast.List):
        return [literal(item) for item in node.val]
    raise bad_request(f"$filter: {type(node).__name__} literals are not supported")


def _datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"$filter: {text!r} is not a date-time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"$filter: {value!r} is not a number")
    return value


def _comparable(left: Any, right: Any) -> bool:
    numbers = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(left, numbers) and isinstance(right, numbers):
        return True
    return type(left) is type(right)


def compare(op: ast._Comparator, left: Any, right: Any) -> bool | None:
    if isinstance(op, ast.In):
        return left in right if isinstance(right, list) else None
    if isinstance(op, ast.Eq | ast.NotEq):
        same = left == right if _comparable(left, right) or None in (left, right) else False
        return same if isinstance(op, ast.Eq) else not same
    if left is None or right is None:
        return False
    if not _comparable(left, right) or isinstance(left, geo.Shape | dict):
        raise bad_request(f"$filter: cannot order {left!r} against {right!r}")
    if isinstance(op, ast.Lt):
        return bool(left < right)
    if isinstance(op, ast.LtE):
        return bool(left <= right)
    if isinstance(op, ast.Gt):
        return bool(left > right)
    return bool(left >= right)


def arithmetic(op: ast._BinOpToken, left: Any, right: Any) -> Any:
    if left is None or right is None:
        return None
    a, b = _number(left), _number(right)
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        result = a * b
        return result if math.isfinite(result) else None
    if b == 0:
        return None  # OData leaves division by zero undefined: the row does not match
    return a / b if isinstance(op, ast.Div) else math.fmod(a, b)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request(f"$filter: {value!r} is not a string")
    return value


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    raise bad_request(f"$filter: {value!r} is not a date-time")


def _shape(value: Any) -> geo.Shape:
    shape = value if isinstance(value, geo.Shape) else geo.from_geojson(value)
    if shape is None:
        raise bad_request(f"$filter: {value!r} is not a geometry")
    return shape


def _substring(s: Any, start: Any, length: Any = None) -> str:
    text, begin = _text(s), int(_number(start))
    return text[begin:] if length is None else text[begin : begin + int(_number(length))]


_STRINGS: dict[str, Callable[..., Any]] = {
    "substringof": lambda a, b: _text(a) in _text(b),
    "contains": lambda a, b: _text(b) in _text(a),
    "startswith": lambda a, b: _text(a).startswith(_text(b)),
    "endswith": lambda a, b: _text(a).endswith(_text(b)),
    "length": lambda a: len(_text(a)),
    "indexof": lambda a, b: _text(a).find(_text(b)),
    "substring": _substring,
    "tolower": lambda a: _text(a).lower(),
    "toupper": lambda a: _text(a).upper(),
    "trim": lambda a: _text(a).strip(),
    "concat": lambda a, b: _text(a) + _text(b),
}
_TIMES: dict[str, Callable[..., Any]] = {
    "year": lambda t: _moment(t).year,
    "month": lambda t: _moment(t).month,
    "day": lambda t: _moment(t).day,
    "hour": lambda t: _moment(t).hour,
    "minute": lambda t: _moment(t).minute,
    "second": lambda t: _moment(t).second,
    "fractionalseconds": lambda t: _moment(t).microsecond / 1e6,
    "date": lambda t: _moment(t).date(),
    "totaloffsetminutes": lambda t: int(
        (_moment(t).utcoffset() or timedelta()).total_seconds() // 60
    ),
    "now": lambda: datetime.now(UTC),
    "mindatetime": lambda: datetime.min.replace(tzinfo=UTC),
    "maxdatetime": lambda: datetime.max.replace(tzinfo=UTC),
}
_MATH: dict[str, Callable[..., Any]] = {
    "round": lambda x: math.floor(_number(x) + 0.5),
    "floor": lambda x: math.floor(_number(x)),
    "ceiling": lambda x: math.ceil(_number(x)),
}
_SPATIAL = {
    "intersects": "intersects",
    "st_intersects": "intersects",
    "st_within": "within",
    "st_contains": "contains",
    "st_disjoint": "disjoint",
    "st_equals": "equals",
    "st_touches": "touches",
}


def _full_name(func: ast.Identifier) -> str:
    return ".".join((*func.namespace, func.name))


def call(func: ast.Identifier, args: list[Any]) -> Any:
    name = func.name
    if func.namespace in ((), STA) and name in _STRINGS | _TIMES | _MATH:
        if any(a is None for a in args):
            return None
        return (_STRINGS | _TIMES | _MATH)[name](*args)
    spatial = _SPATIAL.get(name)
    if spatial is not None and func.namespace in (("geo",), STA):
        if any(a is None for a in args):
            return None
        return geo.relate(spatial, _shape(args[0]), _shape(args[1]))
    if _full_name(func) == "geo.distance":
        return geo.distance(_shape(args[0]), _shape(args[1]))
    raise bad_request(f"$filter: function {_full_name(func)} is not supported here")
