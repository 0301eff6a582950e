"""`devices import` whose broker stops answering part-way: the accounts it created all the same
are asked for, and their secrets shown; none is left with a secret nobody has unsaid.

The broker is a fake here: what is tested is the command's bookkeeping of which commands were
answered, and a timeout cannot be had on cue from a real broker between two of its messages.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from citysense import devices
from common.errors import BrokerError, BrokerUnanswered
from tests.support.seeding import REGISTRY, write_registry

NEW = ["SL-900001", "SL-900002", "SL-900003"]


class Broker:
    """Answers the first `answers` commands, applies `applies` of them in all, then times out
    (or, `reached` False, cannot be reached at all); lists the clients it made unless `lists`
    is False."""

    def __init__(
        self, answers: int, applies: int, lists: bool = True, reached: bool = True
    ) -> None:
        self.answers, self.applies, self.lists, self.reached = answers, applies, lists, reached
        self.clients: list[str] = []
        self.asked: list[str] = []

    def run(
        self,
        commands: list[dict[str, Any]],
        answered: list[dict[str, Any]] | None = None,
        each: Callable[[Sequence[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        self.asked += [c["command"] for c in commands]
        if not self.reached:
            raise BrokerError("broker mqtts://citysense-admin:***@broker:8883 unreachable")
        if commands == [{"command": "listClients"}]:
            if not self.lists:
                raise BrokerUnanswered("the broker did not answer 1 commands in 10.0s")
            return [{"command": "listClients", "data": {"clients": self.clients}}]
        got = []
        for n, command in enumerate(commands[: self.applies]):
            if command["command"] == "createClient":
                self.clients.append(command["username"])
            if n < self.answers:
                got.append({"command": command["command"]})
        if answered is not None:
            answered += got
        if each is not None and got:  # the commands answered, as one message of theirs
            each(commands[: len(got)], got)
        raise BrokerUnanswered(f"the broker did not answer {len(commands) - self.answers} commands")


def _import(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], str]:
    registry = write_registry(tmp_path / "registry.csv")
    monkeypatch.setenv("CITYSENSE_REGISTRY", str(registry))
    monkeypatch.setattr(devices.DevicesSettings, "control", lambda _self: broker)
    rows = [
        {"device_id": d, "profile": "streetlight", "district": "Xihu", "latitude": "30.2"}
        | {"longitude": "120.1", "address": "", "variant": ""}
        for d in NEW
    ]
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    with pytest.raises(BrokerError):
        devices._add(devices.DevicesSettings(), rows)
    shown = {r["device_id"]: r["secret"] for r in csv.DictReader(io.StringIO(out.getvalue()))}
    return shown, err.getvalue()


def test_accounts_made_after_the_broker_stopped_answering_are_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first device's two commands answered, the second's applied unanswered, the third's not.
    broker = Broker(answers=2, applies=4)
    shown, said = _import(tmp_path, broker, monkeypatch)
    assert sorted(shown) == ["SL-900001", "SL-900002"] == broker.clients
    assert "1 account(s) not created (SL-900003): the same add run again" in said


def test_a_broker_never_reached_is_not_said_to_have_made_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker(answers=0, applies=0, reached=False)
    shown, said = _import(tmp_path, broker, monkeypatch)
    assert shown == {} and said == ""
    assert "listClients" not in broker.asked


def test_when_the_broker_cannot_say_the_unknown_accounts_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown, said = _import(tmp_path, Broker(answers=2, applies=4, lists=False), monkeypatch)
    assert sorted(shown) == ["SL-900001"]
    assert "did not say whether it created 2 account(s) (SL-900002, SL-900003)" in said
    assert "citysense devices rotate" in said


def test_a_rotation_unanswered_still_shows_the_secret_it_may_have_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = write_registry(tmp_path / "registry.csv")
    monkeypatch.setenv("CITYSENSE_REGISTRY", str(registry))
    broker = Broker(answers=0, applies=1)
    monkeypatch.setattr(devices.DevicesSettings, "control", lambda _self: broker)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    device_id = REGISTRY[0][0]
    with pytest.raises(BrokerUnanswered):
        devices.main(argparse.Namespace(action="rotate", target=device_id))
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["device_id"] == device_id and len(row["secret"]) >= 20
    assert broker.asked == ["setClientPassword"]
    assert "the secret above is" in err.getvalue()
