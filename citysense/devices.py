"""`citysense devices add|import|rotate|revoke|list`: device credentials, in the registry and the
broker together.

A device's MQTT account is its id with a secret printed once, here, and stored by the broker only
as a salted hash; its role lets it publish its own telemetry and status and nothing else
(citysense/dynsec.py). The registry file is rewritten atomically after the new rows were checked
with every other row, so a running ingest or API never reads half a file. Revoking removes the
broker account at once (an open connection is closed) and keeps the registry row: the device's
stored readings still need their district and place.

The registry row is written before the broker account is created: an add stopped between the two
(killed, broker unreachable) leaves a registered device without an account, and the same add run
again finishes it (a new secret; the row is not written twice). So does adding a revoked device
again. A device registered with an account is refused by `add` (`rotate` gives it a new secret)
and skipped, named, by `import`, so that an import stopped part-way is finished by the same
import run again.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from citysense import dynsec
from citysense.broker import ACCOUNTS
from common.errors import BrokerError, BrokerUnanswered, ConfigError
from common.files import mode_kept, replace_whole
from common.mqtturl import MqttUrl
from common.settings import CommonSettings
from device_profiles import ContractError, Device, Registry, load_profiles, load_registry
from device_profiles.load import OPTIONAL_COLUMNS, REGISTRY_COLUMNS

COLUMNS = (*REGISTRY_COLUMNS, *OPTIONAL_COLUMNS)


class DevicesSettings(CommonSettings):
    # The broker's admin account (dynamic security), over TLS when the broker is remote.
    mqtt_admin_url: SecretStr | None = None

    def control(self) -> dynsec.Control:
        if self.mqtt_admin_url is None:
            raise ConfigError("set CITYSENSE_MQTT_ADMIN_URL: the broker's admin account")
        return dynsec.Control(MqttUrl.parse(self.mqtt_admin_url.get_secret_value()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["add", "import", "rotate", "revoke", "list"])
    parser.add_argument("target", nargs="?", help="add/rotate/revoke: a device id; import: a CSV")
    parser.add_argument("--profile", help="add: the device's profile")
    parser.add_argument("--district", help="add: its district")
    parser.add_argument("--lat", type=float, help="add: latitude")
    parser.add_argument("--lon", type=float, help="add: longitude")
    parser.add_argument("--address", default="", help="add: street address")
    parser.add_argument("--variant", default="", help="add: vendor variant of the profile")


def main(args: argparse.Namespace) -> int:
    settings = DevicesSettings()
    if args.action == "list":
        return _list(settings)
    if not args.target:
        raise ConfigError(f"devices {args.action}: give a {_what(args.action)}")
    if args.action == "add":
        return _add(settings, [_row_from_args(args)])
    if args.action == "import":
        return _add(settings, _rows_from_csv(Path(args.target)), again=True)
    if args.action == "rotate":
        _known(settings, args.target)
        secret = dynsec.new_secret()
        shown = _Secrets({args.target: secret})
        try:
            settings.control().run(dynsec.rotate_device(args.target, secret))
        except BrokerUnanswered:
            # It may have taken effect: then only this secret opens the account.
            shown.show([args.target])
            shown.done()
            print(
                f"citysense devices: the broker did not answer; the secret above is "
                f"{args.target}'s if it took the change (its old one then fails), else rotate "
                "again",
                file=sys.stderr,
            )
            raise
        shown.show([args.target])
        shown.done()
        return 0
    settings.control().run(dynsec.revoke_device(_known(settings, args.target)))
    print(f"revoked {args.target}: the broker refuses it from now on; its registry row is kept")
    return 0


def _what(action: str) -> str:
    return "CSV file" if action == "import" else "device id"


def _row_from_args(args: argparse.Namespace) -> dict[str, str]:
    needed = {"--profile": args.profile, "--district": args.district, "--lat": args.lat}
    needed["--lon"] = args.lon
    missing = [flag for flag, value in needed.items() if value is None]
    if missing:
        raise ConfigError(f"devices add: missing {', '.join(missing)}")
    values = (args.target, args.profile, args.district, args.lat, args.lon, args.address)
    return {**dict(zip(REGISTRY_COLUMNS, map(str, values), strict=True)), "variant": args.variant}


def _rows_from_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"devices import: {path} not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as src:
            reader = csv.DictReader(src)
            missing = [c for c in REGISTRY_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: missing columns {', '.join(missing)}")
            return [{c: (row.get(c) or "").strip() for c in COLUMNS} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"devices import: {path} is not a UTF-8 CSV file: {exc}") from exc


def _add(settings: DevicesSettings, rows: list[dict[str, str]], *, again: bool = False) -> int:
    """`again` (an import): rows registered with an account already are skipped and named,
    so that an import stopped part-way (killed, the broker gone) is finished by the same
    import run again; a single add of such a device is refused."""
    clash = sorted({r["device_id"] for r in rows} & set(ACCOUNTS))
    if clash:
        raise ConfigError(f"{', '.join(clash)}: the name of a CitySense service account")
    resumed, done = _registered_already(settings, rows)
    if again and done:
        rows = [r for r in rows if r["device_id"] not in done]
        print(
            f"citysense devices: {len(done)} device(s) registered with an account already, "
            f"skipped ({_some(done)}); a secret not kept is not shown again: `citysense "
            "devices rotate <id>` gives one a new secret",
            file=sys.stderr,
        )
    devices = _register(settings, [r for r in rows if r["device_id"] not in resumed])
    devices += [resumed[r["device_id"]] for r in rows if r["device_id"] in resumed]
    accounts = [dynsec.DeviceAccount(d.device_id, d.profile, dynsec.new_secret()) for d in devices]
    commands = [c for a in accounts for c in dynsec.create_device(settings.topic_root, a)]
    answered: list[dict[str, Any]] = []
    shown = _Secrets({a.device_id: a.password for a in accounts})
    control = settings.control()
    try:
        # The broker applies each command it can: an account it created has a secret only this
        # run knows, shown as soon as its message is answered, whatever fails after it (then
        # the error, exit 1). Shown at the end instead, an import of 100,000 devices killed
        # part-way had made accounts whose secrets nobody saw, every one to rotate.
        control.run(commands, answered, each=lambda sent, got: shown.show(_made(sent, got)))
    except BrokerUnanswered:
        # Sent, not answered: the broker may have done them. (Refused, or never reached:
        # `answered` says which took effect.)
        shown.show(sorted(_created_unanswered(control, commands[len(answered) :])))
        raise
    finally:
        shown.done()
    return 0


def _made(sent: Sequence[dict[str, Any]], answers: list[dict[str, Any]]) -> list[str]:
    """The accounts the broker created of one message's commands, as it answered them."""
    return [
        command["username"]
        for command, answer in zip(sent, answers, strict=True)
        if command["command"] == "createClient" and not answer.get("error")
    ]


class _Secrets:
    """New secrets printed as their accounts are made, each once (the broker keeps only its
    hash), flushed at once: what is shown before the process is killed is on its output."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self._secrets = secrets
        self._shown = 0

    def show(self, device_ids: Iterable[str]) -> None:
        rows = [(d, self._secrets[d]) for d in device_ids]
        if not rows:
            return
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        if not self._shown:
            out.writerow(["device_id", "secret"])
        out.writerows(rows)
        sys.stdout.write(text.getvalue())  # in one piece, even with PYTHONUNBUFFERED
        sys.stdout.flush()
        self._shown += len(rows)

    def done(self) -> None:
        if self._shown:
            note = f"# {self._shown} secret(s) shown once; CitySense keeps only their hash"
            print(note, file=sys.stderr)


def _created_unanswered(control: dynsec.Control, unanswered: list[dict[str, Any]]) -> set[str]:
    """Of the accounts whose commands went unanswered (a timeout, the connection lost), those
    the broker created all the same, asked afresh: theirs is this run's secret, which nobody
    would know otherwise. The others are finished by the same add run again."""
    pending = [c["username"] for c in unanswered if c["command"] == "createClient"]
    if not pending:
        return set()
    try:
        answer = control.run([{"command": "listClients"}])
    except BrokerError as exc:
        print(
            f"citysense devices: the broker did not say whether it created {len(pending)} "
            f"account(s) ({_some(pending)}): {exc}. `citysense devices list` tells: "
            "an account `none` is finished by the same add run again, an `active` one was "
            "created with a secret nobody has, and needs `citysense devices rotate <id>`",
            file=sys.stderr,
        )
        return set()
    have = set(answer[0].get("data", {}).get("clients", []))
    missing = [device_id for device_id in pending if device_id not in have]
    if missing:
        print(
            f"citysense devices: {len(missing)} account(s) not created ({_some(missing)}): "
            "the same add run again finishes them",
            file=sys.stderr,
        )
    # Accounts this run's commands made: a registered device with one is skipped or refused
    # before (_registered_already, _register). One made by hand under a new device's id, outside
    # CitySense, would be taken for ours here; answered, createClient refuses that name.
    return {device_id for device_id in pending if device_id in have}


def _registered_already(
    settings: DevicesSettings, rows: list[dict[str, str]]
) -> tuple[dict[str, Device], list[str]]:
    """Rows already registered, as asked: (those whose device has no broker account, those
    that have one). Without one: an add that wrote the registry and stopped before the broker
    created the account (killed, broker down), or a revoked device the operator adds again;
    adding them again finishes the add. A row that says otherwise than the registry is
    refused."""
    if not settings.registry.exists():
        return {}, []
    _, registry = settings.load_contract()
    registered = {r["device_id"]: registry.get(r["device_id"]) for r in rows}
    if not any(registered.values()):
        return {}, []
    answer = settings.control().run([{"command": "listClients"}])
    accounts = set(answer[0].get("data", {}).get("clients", []))
    resumed: dict[str, Device] = {}
    done: list[str] = []
    for row in rows:
        device = registered[row["device_id"]]
        if device is None:
            continue  # new: _register adds it
        if (device.profile, device.district) != (row["profile"], row["district"]):
            raise ConfigError(
                f"{device.device_id}: registered as a {device.profile} in {device.district}, "
                f"not a {row['profile']} in {row['district']}; correct the registry row first"
            )
        if device.device_id in accounts:
            done.append(device.device_id)
        else:
            resumed[device.device_id] = device
    return resumed, done


def _register(settings: DevicesSettings, rows: list[dict[str, str]]) -> list[Device]:
    """Append `rows` to the registry once the whole new file loads cleanly; their devices."""
    if not rows:
        return []
    path = settings.registry
    try:
        text = path.read_text(encoding="utf-8-sig") if path.exists() else ""
        existing = list(csv.DictReader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"registry {path} is not a UTF-8 CSV file: {exc}") from exc
    known = {r["device_id"] for r in existing}
    again = sorted(known & {r["device_id"] for r in rows})
    if again:
        raise ConfigError(
            f"already registered: {', '.join(again[:10])} (rotate gives a new secret)"
        )
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{c: r.get(c, "") for c in COLUMNS} for r in (*existing, *rows)])
    profiles = load_profiles(settings.profiles)
    loaded: list[Registry] = []

    def check(candidate: Path) -> None:
        try:
            loaded.append(load_registry(candidate, profiles, settings.load_variants(profiles)))
        except ContractError as exc:
            # Its problems name the temporary file: named here as the registry's own lines.
            problems = "\n".join(str(dataclasses.replace(p, file=path.name)) for p in exc.problems)
            adding = ", ".join(r["device_id"] for r in rows[:10])
            message = f"not added ({adding}): the registry would be invalid:\n{problems}"
            raise ConfigError(message) from None

    mode = mode_kept(path, 0o644)
    replace_whole(path, out.getvalue().encode(), mode=mode, check=check, keep_owner=True)
    return [loaded[0].devices[r["device_id"]] for r in rows]


def _known(settings: DevicesSettings, device_id: str) -> str:
    _, registry = settings.load_contract()
    if registry.get(device_id) is None:
        raise ConfigError(f"{device_id}: not in the registry {settings.registry}")
    return device_id


def _list(settings: DevicesSettings) -> int:
    _, registry = settings.load_contract()
    answer = settings.control().run([{"command": "listClients", "verbose": True}])
    accounts = {c["username"]: c for c in answer[0].get("data", {}).get("clients", [])}
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["device_id", "profile", "district", "broker_account"])
    for device in registry.devices.values():
        out.writerow(
            [
                device.device_id,
                device.profile,
                device.district,
                _state(accounts.get(device.device_id)),
            ]
        )
    return 0


def _state(account: dict[str, Any] | None) -> str:
    if account is None:
        return "none"
    return "disabled" if account.get("disabled") else "active"


def _some(device_ids: list[str]) -> str:
    more = len(device_ids) - 10
    return ", ".join(device_ids[:10]) + (f" and {more} more" if more > 0 else "")
