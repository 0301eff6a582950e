"""Line protocol encoding: escaping that no value can break out of."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.encode import ReadingEncoder, reading_of
from ingest.stages import Enriched
from wire.lineproto import EncodeError, FieldValue, field_value, line, tag


def test_reading_line_shape() -> None:
    text = line(
        "streetlight",
        {"device_id": "SL-1", "district": "West Lake"},
        {"powerState": "on", "voltage": 229.0, "rssi": -80, "doorOpen": False},
        17,
    )
    assert text == (
        "streetlight,device_id=SL-1,district=West\\ Lake "
        'powerState="on",voltage=229.0,rssi=-80i,doorOpen=false 17'
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [("a,b", r"a\,b"), ("a=b", r"a\=b"), ("a b", r"a\ b"), ("plain", "plain")],
)
def test_tag_escaping(value: str, encoded: str) -> None:
    assert tag(value) == encoded


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "ends\\"])
def test_unsafe_tags_are_refused(value: str) -> None:
    with pytest.raises(EncodeError):
        tag(value)


def test_string_values_escape_quotes_and_backslashes() -> None:
    assert field_value('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'


def test_field_value_types() -> None:
    assert field_value(True) == "true"
    assert field_value(1.5) == "1.5"
    assert field_value(3) == "3i"
    assert field_value(1e20) == "1e+20"


def test_the_reading_encoder_keeps_a_district_with_a_space_whole() -> None:
    reading = Enriched("water_pipe", "WP-1", "West Lake", 17, {"pressure": 1.5})
    assert ReadingEncoder().encode(reading) == line(
        "water_pipe", {"device_id": "WP-1", "district": "West Lake"}, {"pressure": 1.5}, 17
    )


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


@given(
    district=st.from_regex(r"[A-Za-z][\w .'-]{0,20}", fullmatch=True).filter(
        lambda d: not d.endswith("\\")
    ),
    values=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_ ,=]{0,10}", fullmatch=True),
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-(2**63), 2**63 - 1),
            st.booleans(),
            _TEXT,
        ),
        min_size=1,
        max_size=5,
    ),
    time_ns=st.integers(0, 2**62),
)
def test_spooled_lines_read_back_as_the_readings_they_encode(
    district: str, values: dict[str, FieldValue], time_ns: int
) -> None:
    reading = Enriched("water_pipe", "WP-1", district, time_ns, values)
    assert reading_of(ReadingEncoder().encode(reading), {"water_pipe"}) == reading
    assert reading_of(ReadingEncoder().encode(reading), {"streetlight"}) is None
