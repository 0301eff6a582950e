"""`devices import` whose broker stops answering part-way: the accounts it created all the same
are asked for, and their secrets shown; none is left with a secret nobody has unsaid.

The broker is a fake here: what is tested is the command's bookkeeping of which commands were
answered, and a timeout cannot be had on cue from a real broker between two of its messages.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from citysense import devices
from common.errors import BrokerError
from tests.support.seeding import write_registry

NEW = ["SL-900001", "SL-900002", "SL-900003"]


class Broker:
    """Answers the first `answers` commands, applies `applies` of them in all, then times out;
    lists the clients it made unless `lists` is False."""

    def __init__(self, answers: int, applies: int, lists: bool = True) -> None:
        self.answers, self.applies, self.lists = answers, applies, lists
        self.clients: list[str] = []

    def run(
        self, commands: list[dict[str, Any]], answered: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        if commands == [{"command": "listClients"}]:
            if not self.lists:
                raise BrokerError("the broker did not answer 1 commands in 10.0s")
            return [{"command": "listClients", "data": {"clients": self.clients}}]
        for n, command in enumerate(commands[: self.applies]):
            if command["command"] == "createClient":
                self.clients.append(command["username"])
            if n < self.answers and answered is not None:
                answered.append({"command": command["command"]})
        raise BrokerError(f"the broker did not answer {len(commands) - self.answers} commands")


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
    shown, _ = _import(tmp_path, broker, monkeypatch)
    assert sorted(shown) == ["SL-900001", "SL-900002"] == broker.clients


def test_when_the_broker_cannot_say_the_unknown_accounts_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown, said = _import(tmp_path, Broker(answers=2, applies=4, lists=False), monkeypatch)
    assert sorted(shown) == ["SL-900001"]
    assert "did not say whether it created 2 account(s) (SL-900002, SL-900003)" in said
    assert "citysense devices rotate" in said
