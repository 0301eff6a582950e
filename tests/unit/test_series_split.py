"""api.core.series_split: the pieces a large part of the city is asked in cover every registered
id exactly once, each at most `most` ids, and the rest covers whatever they do not."""

from __future__ import annotations

import random
import re

import pytest

from api.core.series_split import split
from device_profiles.model import DEVICE_ID


def _check(ids: list[str], most: int) -> None:
    cut = split(ids, most)
    if cut is None:
        assert len(set(ids)) <= most
        return
    for piece in cut.pieces:  # RE2 reads these escapes as Python's re does
        assert sum(1 for i in set(ids) if re.match(piece, i)) <= most, piece
    for device_id in ids:
        assert [p for p in cut.pieces if re.match(p, device_id)] != []
        assert sum(1 for p in cut.pieces if re.match(p, device_id)) == 1, device_id
        assert re.match(cut.rest, device_id)


def test_ids_prefixes_of_others_and_punctuation() -> None:
    ids = ["L1", "L1.0", "L1:0", "L1_0", "L1-0", "L10", "L11", "L2", "a/b", "a$", "a.", "aX"]
    for most in range(1, len(ids) + 1):
        _check(ids, most)
    cut = split(ids, 2)
    assert cut is not None
    assert not re.match(cut.rest, "L3") and not re.match(cut.rest, "b")
    assert re.match(cut.rest, "L1.00") and re.match(cut.rest, "L1")  # a piece's prefix


def test_random_ids() -> None:
    rng = random.Random(7)
    for _ in range(300):
        ids = [
            "".join(rng.choice("ab.:_-9Z") for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(0, 60))
        ]
        _check([i for i in ids if DEVICE_ID.match(i)], rng.randint(1, 10))


def test_a_region_cuts_into_few_pieces() -> None:
    ids = [f"SL-{n:06d}" for n in range(200_000)]
    cut = split(ids, 10_000)
    assert cut is not None
    assert len(cut.pieces) == 20
    assert split(ids[:10_000], 10_000) is None
    with pytest.raises(ValueError):
        split(ids, 0)
