"""`$filter` parsed by odata-query (a maintained OData v4 grammar on SLY) into its AST, bounded.

SensorThings adds to OData a few functions odata-query does not know (`substringof` and the
`st_*` spatial relations). Its parser accepts any function in a namespace other than `geo`, so
the lexer's tokens for those names are moved into the `sta` namespace before parsing; their
argument counts are checked here. `@iot.id` (which the OData lexer cannot read) is the same as
`id`.

Every input is bounded before it costs anything: length, tokens, nesting depth, and the size of
each literal, so a hostile filter is refused with a message instead of exhausting the process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from odata_query import ast
from odata_query import exceptions as odata
from odata_query.grammar import ODataLexer, ODataParser

from api.sta.errors import bad_request

MAX_CHARS = 2000
MAX_TOKENS = 400
MAX_DEPTH = 24
MAX_INTEGER = 2**63 - 1

# SensorThings 1.1 functions beyond odata-query's list, with their argument counts.
STA_FUNCTIONS = {
    "substringof": 2,
    "st_equals": 2,
    "st_disjoint": 2,
    "st_touches": 2,
    "st_within": 2,
    "st_overlaps": 2,
    "st_crosses": 2,
    "st_intersects": 2,
    "st_contains": 2,
    "st_relate": 3,
}
STA = ("sta",)

_STRING = re.compile(r"'(?:[^']|'')*'")
_IOT_ID = re.compile(r"@iot\.id\b")


def parse_filter(text: str) -> ast._Node:
    """The AST of a `$filter` value; StaError (400) saying what is wrong otherwise."""
    if len(text) > MAX_CHARS:
        raise bad_request(f"$filter is longer than {MAX_CHARS} characters")
    try:
        tree: ast._Node | None = ODataParser().parse(_tokens(_plain_ids(text)))
    except odata.ODataException as exc:
        raise bad_request(f"$filter: {exc}") from None
    if tree is None:
        raise bad_request("$filter is empty")
    _check(tree)
    return tree


def _plain_ids(text: str) -> str:
    """`@iot.id` → `id`, outside string literals only."""
    out, at = [], 0
    for match in _STRING.finditer(text):
        out.append(_IOT_ID.sub("id", text[at : match.start()]))
        out.append(match.group())
        at = match.end()
    out.append(_IOT_ID.sub("id", text[at:]))
    return "".join(out)


def _tokens(text: str) -> Iterator[Any]:
    depth = 0
    for count, token in enumerate(ODataLexer().tokenize(text), start=1):
        if count > MAX_TOKENS:
            raise bad_request(f"$filter has more than {MAX_TOKENS} tokens")
        if token.type == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise bad_request(f"$filter nests deeper than {MAX_DEPTH} parentheses")
        elif token.type == ")":
            depth -= 1
        elif token.type == "ODATA_IDENTIFIER":
            name = token.value
            if not name.namespace and name.name.lower() in STA_FUNCTIONS:
                token.value = ast.Identifier(name.name.lower(), STA)
        yield token


def children(node: ast._Node) -> list[ast._Node]:
    if isinstance(node, ast.BoolOp | ast.BinOp | ast.Compare):
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, ast.Call):
        return list(node.args)
    if isinstance(node, ast.Attribute):
        return [node.owner]
    if isinstance(node, ast.List):
        return list(node.val)
    return []


def _check(tree: ast._Node) -> None:
    """Depth and literals, walked without recursion (the depth is what is being checked)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH * 2:
            raise bad_request(f"$filter nests deeper than {MAX_DEPTH * 2} operators")
        _literal(node)
        if isinstance(node, ast.Call) and node.func.namespace == STA:
            wanted = STA_FUNCTIONS[node.func.name]
            if len(node.args) != wanted:
                raise bad_request(f"$filter: {node.func.name} takes {wanted} arguments")
        if isinstance(node, ast.CollectionLambda | ast.NamedParam):
            raise bad_request("$filter: lambda operators (any, all) are not supported")
        stack.extend((child, depth + 1) for child in children(node))


def _literal(node: ast._Node) -> None:
    if isinstance(node, ast.Integer):
        if len(node.val) > 20 or abs(int(node.val)) > MAX_INTEGER:
            raise bad_request(f"$filter: integer {node.val[:30]} is out of range")
    elif isinstance(node, ast.Float) and (len(node.val) > 40 or not math.isfinite(float(node.val))):
        raise bad_request(f"$filter: number {node.val[:30]} is out of range")
