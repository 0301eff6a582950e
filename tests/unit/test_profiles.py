"""The profile contract: the shipped files load, and mistakes are reported with file and line."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import IO, Any

import pytest

from citysense.cli import main
from common.settings import CommonSettings
from device_profiles import (
    DEFAULT_PROFILES,
    DEFAULT_REGISTRY,
    ContractError,
    FieldType,
    load_profiles,
    load_registry,
)


def test_shipped_profiles_and_registry_load() -> None:
    profiles = load_profiles()
    assert set(profiles) == {"streetlight", "water_pipe", "power_meter"}
    registry = load_registry(DEFAULT_REGISTRY, profiles)
    assert len(registry.devices) >= 2000
    assert len(registry.districts) >= 4
    assert {d.profile for d in registry.devices.values()} == set(profiles)
    # every number field is stored as float, so no profile change can cause a type conflict
    assert profiles["power_meter"].fields["totalActiveEnergyImport"].type is FieldType.NUMBER


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


BASE = """profile: pipe
reporting_interval: 5m
fields:
  pressure: {type: number, unit: kPa, range: [0, 100]}
"""


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    write(tmp_path, "pipe.yaml", BASE.replace("range: [0, 100]", "range: [100, 0]"))
    with pytest.raises(ContractError) as info:
        load_profiles(tmp_path)
    (problem,) = info.value.problems
    assert problem.file == "pipe.yaml"
    assert problem.line == 4
    assert problem.where.startswith("fields.pressure")
    assert "min above max" in problem.message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("type: number", "type: colour"), "type"),
        (("reporting_interval: 5m", "reporting_interval: soon"), "not a duration"),
        (("pressure:", "pres sure:"), "must match"),
        (("pressure:", "device_id:"), "'device_id' is reserved"),
        (("pressure:", "district:"), "'district' is reserved"),
        (("profile: pipe", "profile: pipe\nsurprise: 1"), "Extra inputs"),
        (("unit: kPa", "unit: kPa, values: [a]"), "only for state"),
    ],
)
def test_each_mistake_is_caught(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    write(tmp_path, "pipe.yaml", BASE.replace(*change))
    with pytest.raises(ContractError) as info:
        load_profiles(tmp_path)
    assert expected in str(info.value)


def test_unquoted_on_off_states_are_caught(tmp_path: Path) -> None:
    # YAML 1.1 reads bare on/off as booleans; a state list must say "on" in quotes.
    write(tmp_path, "pipe.yaml", BASE + "  valve: {type: state, values: [on, off]}\n")
    with pytest.raises(ContractError) as info:
        load_profiles(tmp_path)
    assert info.value.problems[0].line == 5


def test_broken_yaml_reports_line(tmp_path: Path) -> None:
    write(tmp_path, "pipe.yaml", BASE + "  flow: {type: number\n")
    with pytest.raises(ContractError) as info:
        load_profiles(tmp_path)
    assert "not valid YAML" in str(info.value)
    assert info.value.problems[0].line is not None


def test_registry_rows_are_checked(tmp_path: Path) -> None:
    profiles = load_profiles()
    path = write(
        tmp_path,
        "reg.csv",
        "device_id,profile,district,latitude,longitude,address\n"
        "SL-1,streetlight,Xihu,30.1,120.1,ok\n"
        "SL-1,streetlight,Xihu,30.1,120.1,duplicate\n"
        "bad id,streetlight,Xihu,30.1,120.1,space in id\n"
        "SL-2,teapot,Xihu,30.1,120.1,unknown profile\n"
        'SL-3,streetlight,"Xi,hu",30.1,120.1,comma in district\n'
        "SL-4,streetlight,Xihu,91,120.1,latitude\n",
    )
    with pytest.raises(ContractError) as info:
        load_registry(path, profiles)
    lines = sorted(p.line or 0 for p in info.value.problems)
    assert lines == [3, 4, 5, 6, 7]


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "check"]) == 0
    assert "ok: registry" in capsys.readouterr().out
    write(tmp_path, "pipe.yaml", BASE.replace("type: number", "type: colour"))
    assert main(["profiles", "check", "--profiles", str(tmp_path)]) == 1
    assert "pipe.yaml:4" in capsys.readouterr().out


def test_default_folder_is_the_package() -> None:
    assert (DEFAULT_PROFILES / "streetlight.yaml").exists()


@pytest.mark.parametrize(("kept", "refused"), [("30d", True), ("31d", False), ("INF", False)])
def test_change_marks_must_outlive_the_oldest_reading_a_profile_accepts(
    kept: str, refused: bool
) -> None:
    # The shipped profiles accept readings up to 30 days old: marks kept 30 days would expire
    # under the windows such readings land in (a window's mark is stamped at its start).
    settings = CommonSettings(retention_changes=kept)
    if not refused:
        profiles, _ = settings.load_contract()
        assert set(profiles) == {"streetlight", "water_pipe", "power_meter"}
        return
    with pytest.raises(ContractError) as info:
        settings.load_contract()
    assert sorted(p.where for p in info.value.problems) == [
        f"{name}: timestamp.max_age" for name in ("power_meter", "streetlight", "water_pipe")
    ]
    assert "CITYSENSE_RETENTION_CHANGES" in str(info.value)


def test_a_registry_larger_than_a_slice_names_each_problem_s_line(tmp_path: Path) -> None:
    """Rows are validated 10,000 at a time: a duplicate across two slices and a bad row in a
    later slice are still found and named by line, the good rows all kept."""
    header = "device_id,profile,district,latitude,longitude,address\n"
    rows = [f"SL-{n},streetlight,Xihu,30.1,120.1,a\n" for n in range(10_005)]
    rows[10_002] = "SL-5,streetlight,Xihu,30.1,120.1,duplicate of line 7\n"
    rows[10_003] = "SL-X,streetlight,Xihu,99,120.1,latitude\n"
    path = write(tmp_path, "reg.csv", header + "".join(rows))
    with pytest.raises(ContractError) as info:
        load_registry(path, load_profiles())
    assert [(p.line, p.where) for p in info.value.problems] == [
        (10_004, "device_id"),
        (10_005, "latitude"),
    ]
    # A duplicate of the first slice alone in a later, otherwise valid slice (validated whole).
    del rows[10_003]
    path = write(tmp_path, "reg.csv", header + "".join(rows))
    with pytest.raises(ContractError) as info:
        load_registry(path, load_profiles())
    assert [(p.line, p.where) for p in info.value.problems] == [(10_004, "device_id")]
    del rows[10_002]
    path = write(tmp_path, "reg.csv", header + "".join(rows))
    assert len(load_registry(path, load_profiles()).devices) == 10_003


def test_a_registry_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "reg.csv"
    text = "device_id,profile,district,latitude,longitude,address\nSL-1,streetlight,Xihu,30,120,a\n"
    path.write_bytes(text.encode("utf-8-sig"))  # a spreadsheet's "CSV UTF-8"
    assert list(load_registry(path, load_profiles()).devices) == ["SL-1"]


def test_a_registry_not_in_utf8_or_not_csv_is_a_contract_problem(tmp_path: Path) -> None:
    """Not a traceback: a running worker's registry watch keeps its registry (ContractError),
    and a start says what is wrong in one line."""
    header = "device_id,profile,district,latitude,longitude,address\n"
    path = tmp_path / "reg.csv"
    path.write_bytes((header + "SL-1,streetlight,Xihu,30.1,120.1,Café\n").encode("latin-1"))
    with pytest.raises(ContractError, match="not UTF-8"):
        load_registry(path, load_profiles())
    path.write_text(header + 'SL-1,streetlight,Xihu,30.1,120.1,"' + "x" * 200_000 + '"\n')
    with pytest.raises(ContractError, match="not a CSV row") as info:
        load_registry(path, load_profiles())
    assert info.value.problems[0].line == 2


class _FailsMidRead(io.RawIOBase):
    """A file whose disk fails after `data` was read (EIO), as a network share may."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._data:
            raise OSError(errno.EIO, "Input/output error")
        size = min(len(buffer), len(self._data))
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


def test_a_registry_whose_disk_fails_mid_read_is_a_contract_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "device_id,profile,district,latitude,longitude,address\n"
    path = write(tmp_path, "reg.csv", header)
    rows = "".join(f"SL-{n},streetlight,Xihu,30.1,120.1,a\n" for n in range(5000)).encode()

    profiles = load_profiles()
    opened = Path.open

    def failing(self: Path, *args: Any, **kwargs: Any) -> IO[Any]:
        if self != path:
            return opened(self, *args, **kwargs)
        raw = io.BufferedReader(_FailsMidRead(header.encode() + rows), buffer_size=4096)
        return io.TextIOWrapper(raw, encoding=kwargs["encoding"], newline=kwargs["newline"])

    monkeypatch.setattr(Path, "open", failing)
    with pytest.raises(ContractError, match=r"cannot read registry: .*Input/output error"):
        load_registry(path, profiles)


def test_a_column_named_twice_is_read_from_its_last_as_before(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "reg.csv",
        "device_id,profile,district,latitude,longitude,address,address\n"
        "SL-1,streetlight,Xihu,30.1,120.1,first,last\n",
    )
    assert load_registry(path, load_profiles()).devices["SL-1"].address == "last"
