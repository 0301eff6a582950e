"""Change marks written by ingest: one per (profile, district, 15-minute window), one stamp per
write, never counted as readings."""

from __future__ import annotations

from ingest.changes import change_lines, changes_of, is_change, restamp
from ingest.stages import Enriched
from wire.changes import WINDOW_NS, window_of


def reading(measurement: str, district: str, time_ns: int) -> Enriched:
    return Enriched(measurement, "D-1", district, time_ns, {"x": 1.0})


def test_marks_cover_each_window_written_once() -> None:
    w = WINDOW_NS
    readings = [
        reading("water_pipe", "North", 5 * w + 1),
        reading("water_pipe", "North", 6 * w - 1),
        reading("water_pipe", "North", 6 * w),
        reading("water_pipe", "South", 5 * w),
        reading("streetlight", "North", 5 * w),
    ]
    assert changes_of(readings) == {
        ("water_pipe", "North", 5 * w),
        ("water_pipe", "North", 6 * w),
        ("water_pipe", "South", 5 * w),
        ("streetlight", "North", 5 * w),
    }
    assert window_of(6 * w - 1) == 5 * w


def test_one_stamp_per_write_and_lines_are_marks() -> None:
    w = WINDOW_NS
    lines = change_lines({("water_pipe", "North", 0), ("water_pipe", "Old Town", w)})
    assert lines[0].startswith("citysense_changes,district=North,profile=water_pipe stamp=")
    assert lines[1].startswith(r"citysense_changes,district=Old\ Town,profile=water_pipe stamp=")
    assert lines[1].endswith(f" {w}")
    assert len({line.rsplit(" ", 2)[1] for line in lines}) == 1
    assert all(is_change(line) for line in lines)
    assert not is_change("water_pipe,device_id=D-1,district=North x=1 0")


def test_restamp_gives_the_trailing_marks_one_fresh_stamp() -> None:
    data = ["water_pipe,device_id=D-1,district=North x=1 5"]
    marks = change_lines({("water_pipe", "North", 0), ("water_pipe", "South", 0)})
    again = restamp(data + marks)
    assert again[0] == data[0]
    assert [m.rsplit(" ", 2)[::2] for m in again[1:]] == [m.rsplit(" ", 2)[::2] for m in marks]
    assert len({m.rsplit(" ", 2)[1] for m in again[1:]}) == 1
    assert again[1:] != marks
    assert restamp(data) is data


def _fields(mark: str) -> dict[str, str]:
    return dict(f.split("=") for f in mark.rsplit(" ", 2)[1].split(","))


def test_quiet_marks_carry_their_stamp_twice_and_stay_quiet_when_restamped() -> None:
    data = ["water_pipe,device_id=D-1,district=North x=1 5"]
    quiet = change_lines({("water_pipe", "North", 0)}, quiet=True)
    first = _fields(quiet[0])
    assert first["stamp"] == first["quiet"]
    again = _fields(restamp(data + quiet)[1])
    assert again["stamp"] == again["quiet"] != first["stamp"]
    loud = restamp(data + change_lines({("water_pipe", "North", 0)}))[1]
    assert set(_fields(loud)) == {"stamp"}
