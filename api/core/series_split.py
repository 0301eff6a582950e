"""Cutting a query over many devices into queries over at most `most` series each.

InfluxDB 1.x answers a raw (non-aggregate) query GROUP BY device_id with one cursor per series
and field, every one opened before the first row is sent, each with buffers of its own: its memory
grows with the series one query touches, and nothing in its configuration bounds it short of
refusing the query (`max-select-series`). One query for a district's 100,000 streetlights took
InfluxDB to 8.7 GB; at 300,000 devices a restart that queried every part took it from 7.5 to
13.4 GB. The pieces are not made small: a pattern costs InfluxDB 1.6 a pass over all the
measurement's device ids, whatever it matches (seconds at 600,000 ids).

So a part of a city too large for one query is asked in pieces, each naming the device ids it
covers by a regular expression of id prefixes (bound as a parameter, never spliced into the
text): the registered ids, sorted, are cut where their prefixes branch (a trie), and neighbouring
prefixes are packed together up to `most` ids. One more query, `rest`, asks for every id that no
piece's prefix covers (a device stored under this part and registered elsewhere, or not at all),
so the pieces and the rest together return exactly what the one query returned.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from api.core.contract import Contract
from common.influx import Regex


@dataclass(frozen=True, slots=True)
class Split:
    """Regular expressions over device ids: each of `pieces` matches at most `most` of the ids
    split, every id split matches exactly one, and `rest` matches every string none of them
    matches (to be asked with `!~`)."""

    pieces: list[str]
    rest: str


def _escape(text: str) -> str:
    """`text` as a literal in a Go (RE2) regular expression inside InfluxQL's /…/: every ASCII
    character but letters and digits escaped (RE2 takes any escaped ASCII punctuation as itself;
    the slash must be escaped for InfluxQL)."""
    return "".join(c if c.isalnum() or not c.isascii() else "\\" + c for c in text)


def _leaves(ids: Sequence[str], most: int) -> list[tuple[str, int]]:
    """Patterns (an escaped prefix, or an escaped whole id followed by `$`) in id order, each
    matching at most `most` of the sorted, distinct `ids`, together matching each exactly once."""
    out: list[tuple[str, int]] = []
    stack = [("", 0, len(ids))]  # a prefix, and the range of the sorted ids that share it
    while stack:  # depth first, in id order: every earlier id's pattern is out already
        prefix, lo, hi = stack.pop()
        if hi - lo <= most:
            out.append((_escape(prefix), hi - lo))
            continue
        depth = len(prefix)
        if len(ids[lo]) == depth:  # the prefix is an id itself, sorted before the longer ones
            out.append((_escape(prefix) + "$", 1))
            lo += 1
        children = []
        while lo < hi:
            c = ids[lo][depth]
            end = hi if ord(c) == 0x10FFFF else bisect_left(ids, prefix + chr(ord(c) + 1), lo, hi)
            children.append((prefix + c, lo, end))
            lo = end
        stack.extend(reversed(children))
    return out


def split(ids: Sequence[str], most: int) -> Split | None:
    """None when `ids` are at most `most`: one query asks for them all."""
    if most < 1:
        raise ValueError(f"most must be at least 1, not {most}")
    ordered = sorted(set(ids))
    if len(ordered) <= most:
        return None
    pieces: list[list[str]] = [[]]
    count = 0
    every: list[str] = []
    for pattern, n in _leaves(ordered, most):
        if count + n > most and pieces[-1]:
            pieces.append([])
            count = 0
        pieces[-1].append(pattern)
        every.append(pattern)
        count += n
    return Split([f"^(?:{'|'.join(p)})" for p in pieces], f"^(?:{'|'.join(every)})")


Piece = tuple[Regex | None, Regex | None]  # device ids matching, not matching (None: any)
WHOLE: Piece = (None, None)


class Splits:
    """The pieces each (profile, district) of the registry is asked in, cut once: the registry is
    fixed for the process's life (a million ids take a quarter of a second)."""

    def __init__(self, contract: Contract, most: int) -> None:
        self._contract = contract
        self._most = most
        self._cut: dict[tuple[str, str | None], list[Piece]] = {}

    def of(self, profile: str, district: str | None) -> list[Piece]:
        """One piece asking for every id when the part holds at most `most` registered
        devices; else the patterns of its registered ids, then the rest."""
        key = (profile, district)
        pieces = self._cut.get(key)
        if pieces is None:
            ids = [d.device_id for d in self._contract.devices(profile, district)]
            cut = split(ids, self._most)
            pieces = [WHOLE]
            if cut is not None:
                pieces = [(Regex(p), None) for p in cut.pieces] + [(None, Regex(cut.rest))]
            self._cut[key] = pieces
        return pieces
