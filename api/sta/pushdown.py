"""`$filter` on Observations translated to an InfluxQL condition with bound values only.

An Observation is one field of one stored reading, so `result` is the field and
`phenomenonTime` is `time`. What translates:

    result <op> literal        "<field>" <op> $pN   (numbers; eq/ne for states, text, flags)
    result add|sub|mul|div n   arithmetic on the field, InfluxQL evaluates it per point
    phenomenonTime <op> time   time <op> $pN        (combined with `and` only: InfluxQL
                                                     cannot OR time ranges)
    and, or, not, in           not is pushed down to the comparisons (De Morgan)

Anything else (string or date functions, other properties, geometry) cannot be evaluated by
InfluxDB and is refused with a 400 saying so: filtering in Python would mean loading every
reading of the datastream first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from odata_query import ast

from api.core.times import parse_rfc3339
from api.sta.errors import bad_request
from api.sta.evaluate import path_of
from common.influx import ParamValue, quote_ident
from device_profiles import FieldSpec, FieldType

_OPS: dict[type[ast._Comparator], str] = {
    ast.Eq: "=",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_NEGATED: dict[type[ast._Comparator], type[ast._Comparator]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.LtE: ast.Gt,
    ast.Gt: ast.LtE,
    ast.GtE: ast.Lt,
}
_FLIPPED: dict[type[ast._Comparator], type[ast._Comparator]] = {
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
    ast.Lt: ast.Gt,
    ast.LtE: ast.GtE,
    ast.Gt: ast.Lt,
    ast.GtE: ast.LtE,
}
_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
NUMERIC = (FieldType.NUMBER, FieldType.INTEGER)
REFUSED = "cannot be evaluated by the database on Observations"


@dataclass
class Condition:
    """An InfluxQL condition and its bound values, built up by `translate`."""

    name: str
    spec: FieldSpec
    params: dict[str, ParamValue] = field(default_factory=dict)

    def bind(self, value: ParamValue) -> str:
        name = f"f{len(self.params)}"
        self.params[name] = value
        return f"${name}"


def translate(tree: ast._Node, target: Condition) -> str:
    """The InfluxQL condition of `tree` for the field of `target` (its values bound there)."""
    return _node(tree, target, negate=False, under_or=False)


def _node(node: ast._Node, c: Condition, *, negate: bool, under_or: bool) -> str:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _node(node.operand, c, negate=not negate, under_or=under_or)
    if isinstance(node, ast.BoolOp):
        conjunction = isinstance(node.op, ast.And) != negate  # De Morgan
        joined = " AND " if conjunction else " OR "
        inner_or = under_or or not conjunction
        left = _node(node.left, c, negate=negate, under_or=inner_or)
        right = _node(node.right, c, negate=negate, under_or=inner_or)
        return f"({left}{joined}{right})"
    if isinstance(node, ast.Compare):
        return _compare(node, c, negate=negate, under_or=under_or)
    raise bad_request(f"$filter: {_describe(node)} {REFUSED}")


def _compare(node: ast.Compare, c: Condition, *, negate: bool, under_or: bool) -> str:
    if isinstance(node.comparator, ast.In):
        return _in(node, c, negate=negate, under_or=under_or)
    op = type(node.comparator)
    left, right = node.left, node.right
    if isinstance(left, ast._Literal) and not isinstance(right, ast._Literal):
        left, right, op = right, left, _FLIPPED[op]
    if negate:
        op = _NEGATED[op]
    if not isinstance(right, ast._Literal):
        raise bad_request(f"$filter: comparing two properties {REFUSED}")
    if path_of(left) == ("phenomenonTime",):
        return _time(op, right, c, under_or=under_or)
    return f"{_result(left, c)} {_OPS[op]} {c.bind(_value(right, op, c))}"


def _in(node: ast.Compare, c: Condition, *, negate: bool, under_or: bool) -> str:
    if not isinstance(node.right, ast.List) or not node.right.val:
        raise bad_request("$filter: `in` takes a list of literals")
    op: type[ast._Comparator] = ast.NotEq if negate else ast.Eq
    joined = " AND " if negate else " OR "
    parts = [
        _compare(ast.Compare(op(), node.left, item), c, negate=False, under_or=True)
        for item in node.right.val
    ]
    return "(" + joined.join(parts) + ")"


def _time(op: type[ast._Comparator], value: ast._Node, c: Condition, *, under_or: bool) -> str:
    if under_or:
        raise bad_request(
            "$filter: phenomenonTime may only be combined with `and` on Observations "
            "(InfluxQL cannot OR time ranges)"
        )
    if op is ast.NotEq:
        raise bad_request(f"$filter: phenomenonTime ne {REFUSED}")
    if not isinstance(value, ast.DateTime):
        raise bad_request("$filter: phenomenonTime is compared with a date-time literal")
    text = value.val if value.val[-1] in "Zz" or "+" in value.val[10:] else value.val + "Z"
    try:
        nanos = parse_rfc3339(text.replace("z", "Z"))
    except ValueError as exc:
        raise bad_request(f"$filter: {value.val!r}: {exc}") from None
    return f"time {_OPS[op]} {c.bind(nanos)}"


def _result(node: ast._Node, c: Condition) -> str:
    """`result`, or arithmetic on it with number literals."""
    if path_of(node) == ("result",):
        return quote_ident(c.name)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        if c.spec.type not in NUMERIC:
            raise bad_request("$filter: arithmetic needs a numeric result")
        sign = _ARITHMETIC[type(node.op)]
        left = _operand(node.left, c)
        right = _operand(node.right, c)
        return f"({left} {sign} {right})"
    raise bad_request(f"$filter: {_describe(node)} {REFUSED}")


def _operand(node: ast._Node, c: Condition) -> str:
    if isinstance(node, ast.Integer | ast.Float):
        return c.bind(float(node.val))
    return _result(node, c)


def _value(node: ast._Node, op: type[ast._Comparator], c: Condition) -> ParamValue:
    kind, equality = c.spec.type, op in (ast.Eq, ast.NotEq)
    if isinstance(node, ast.Integer | ast.Float) and kind in NUMERIC:
        number = float(node.val)
        return int(number) if kind is FieldType.INTEGER and number.is_integer() else number
    if isinstance(node, ast.String) and kind in (FieldType.STATE, FieldType.TEXT) and equality:
        return node.val
    if isinstance(node, ast.Boolean) and kind is FieldType.BOOLEAN and equality:
        return node.val.lower() == "true"
    raise bad_request(
        f"$filter: result of {c.name!r} is {kind.value}; it cannot be compared "
        f"({op.__name__}) with {_describe(node)}"
    )


def _describe(node: ast._Node) -> str:
    path = path_of(node)
    if path is not None:
        return "/".join(path)
    if isinstance(node, ast.Call):
        return f"function {'.'.join((*node.func.namespace, node.func.name))}"
    if isinstance(node, ast._Literal):
        return f"{type(node).__name__.lower()} {str(getattr(node, 'val', ''))[:40]!r}"
    return type(node).__name__


def datastream_of(tree: ast._Node) -> tuple[str | None, ast._Node | None]:
    """A top-level `Datastream/id eq '…'` conjunct (it names the series to query) and the rest
    of the filter."""
    if (
        isinstance(tree, ast.Compare)
        and isinstance(tree.comparator, ast.Eq)
        and path_of(tree.left) == ("Datastream", "id")
        and isinstance(tree.right, ast.String)
    ):
        return tree.right.val, None
    if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And):
        found, rest = datastream_of(tree.left)
        if found is not None:
            return found, tree.right if rest is None else ast.BoolOp(ast.And(), rest, tree.right)
        found, rest = datastream_of(tree.right)
        if found is not None:
            return found, tree.left if rest is None else ast.BoolOp(ast.And(), tree.left, rest)
    return None, tree
