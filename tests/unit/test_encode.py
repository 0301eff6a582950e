"""Line protocol encoding: escaping that no value can break out of."""

from __future__ import annotations

import pytest

from ingest.encode import EncodeError, field_value, line, tag


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
