"""The broker's accounts and what each may do, kept by Mosquitto's dynamic security plugin.

Two ways in, one vocabulary (the roles and ACLs below):
- `broker_file` writes the plugin's JSON file while the broker is stopped: the service accounts
  (ingest, the API, the simulator, the admin) from this deployment's secrets, everything else
  in the file kept as it was, so devices an operator added survive every restart.
- `Control` sends commands to the running broker over MQTT (`$CONTROL/dynamic-security/v1`), as
  `citysense devices` does: a device added, rotated or revoked takes effect at once, without a
  restart, and a revoked device's open connection is closed by the broker.

Mosquitto 2.0's plugin does not substitute `%u` in ACL topics (tried: a `%u` rule matched
nothing), so each device has its own role naming its own topics; a device can publish only as
itself, under its registered profile.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.errors import BrokerError, BrokerRefused, BrokerUnanswered, CitySenseError
from common.files import replace_whole
from common.mqtturl import MqttUrl

PLUGIN = "mosquitto_dynamic_security.so"
PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
ADMIN = "citysense-admin"
SERVICES = ("citysense-ingest", "citysense-api", "citysense-simulator", "citysense-sta")
# What Mosquitto's own tools write: PBKDF2-SHA512 over a 12-byte salt. The passwords we issue are
# 24 random characters, so the iteration count is not what protects them.
ITERATIONS = 101
COMMANDS_PER_MESSAGE = 200
STA_TOPICS = "v1.1/#"  # a CSV import of thousands goes in messages well under max_packet_size


def find_plugin() -> Path:
    for folder in PLUGIN_DIRS:
        path = Path(folder) / PLUGIN
        if path.is_file():
            return path
    raise CitySenseError(f"{PLUGIN} not found; it ships with Debian's mosquitto package")


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "allow": True, "priority": 0}


def _reads(*topics: str) -> list[dict[str, Any]]:
    return [_acl(k, t) for t in topics for k in ("subscribePattern", "publishClientReceive")]


def _writes(*topics: str) -> list[dict[str, Any]]:
    return [_acl("publishClientSend", t) for t in topics]


def service_roles(root: str) -> dict[str, list[dict[str, Any]]]:
    """Each service account's role: what it may read and publish under the topic root."""
    telemetry, status, feed = f"{root}/+/+/telemetry", f"{root}/+/+/status", f"{root}/_ingested/+"
    control = f"{CONTROL_TOPIC.rsplit('/', 1)[0]}/#"
    return {
        # Ingest reads telemetry and announces what it stored on the state feed.
        # Mosquitto 2.0's plugin checks a shared subscription as written, `$share/<group>/…`.
        "citysense-ingest": [
            *_reads(telemetry),
            _acl("subscribePattern", f"$share/+/{telemetry}"),
            *_writes(feed),
        ],
        # The API reads telemetry, status and the state feed, and publishes only SensorThings
        # Observations as they are stored (api/sta, the MQTT extension).
        "citysense-api": _reads(telemetry, status, feed) + _writes(STA_TOPICS),
        # SensorThings clients read those Observations (all of them: see the README).
        "citysense-sta": _reads(STA_TOPICS),
        # The simulator stands in for a gateway publishing on behalf of many devices.
        "citysense-simulator": _writes(telemetry, status),
        ADMIN: _reads(control) + _writes(control),
    }


def device_role_name(device_id: str) -> str:
    return f"device:{device_id}"


def device_acls(root: str, profile: str, device_id: str) -> list[dict[str, Any]]:
    return _writes(
        f"{root}/{profile}/{device_id}/telemetry", f"{root}/{profile}/{device_id}/status"
    )


def new_secret() -> str:
    return secrets.token_urlsafe(18)


def hashed(password: str) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    device_id: str
    profile: str
    password: str


def broker_file(
    path: Path,
    root: str,
    passwords: Mapping[str, str],
    devices: Iterable[DeviceAccount] = (),
) -> None:
    """Write the plugin's file: service accounts from `passwords` (ADMIN and SERVICES), devices
    given here added, every other client and role already in the file kept."""
    document = json.loads(path.read_text()) if path.exists() else {}
    clients = {c["username"]: c for c in document.get("clients", [])}
    roles = {r["rolename"]: r for r in document.get("roles", [])}
    for name, acls in service_roles(root).items():
        roles[name] = {"rolename": name, "acls": acls}
        clients[name] = {"username": name, "roles": [{"rolename": name}], **hashed(passwords[name])}
    for device in devices:
        role = device_role_name(device.device_id)
        roles[role] = {
            "rolename": role,
            "acls": device_acls(root, device.profile, device.device_id),
        }
        clients[device.device_id] = {
            "username": device.device_id,
            "roles": [{"rolename": role}],
            **hashed(device.password),
        }
    document.update(
        clients=list(clients.values()),
        roles=list(roles.values()),
        groups=document.get("groups", []),
        # Nothing is allowed unless a role says so, receiving included.
        defaultACLAccess={
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    )
    # Whole or not at all: a torn file would cost every device its credentials.
    replace_whole(path, json.dumps(document, indent=1).encode())


# --- the running broker ------------------------------------------------------------------------


def create_device(root: str, device: DeviceAccount) -> list[dict[str, Any]]:
    role = device_role_name(device.device_id)
    return [
        {
            "command": "createRole",
            "rolename": role,
            "acls": device_acls(root, device.profile, device.device_id),
        },
        {
            "command": "createClient",
            "username": device.device_id,
            "password": device.password,
            "roles": [{"rolename": role}],
        },
    ]


def revoke_device(device_id: str) -> list[dict[str, Any]]:
    # Deleting the client also disconnects it if it is connected.
    return [
        {"command": "deleteClient", "username": device_id},
        {"command": "deleteRole", "rolename": device_role_name(device_id)},
    ]


def rotate_device(device_id: str, password: str) -> list[dict[str, Any]]:
    return [{"command": "setClientPassword", "username": device_id, "password": password}]


class Control:
    """Commands to a running broker's dynamic-security plugin, answered one by one."""

    def __init__(self, url: MqttUrl, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    def run(
        self,
        commands: Sequence[dict[str, Any]],
        answered: list[dict[str, Any]] | None = None,
        each: Callable[[Sequence[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Send `commands` in order; their responses, or BrokerRefused naming each failed
        command (the ones before it took effect). `answered` gathers the responses as they come,
        and `each` is called with every message's commands and their responses once answered:
        what the broker did is known even if a later message fails or the process is killed."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.url.configure(client)
        session = _Session(client)
        try:
            client.connect(self.url.host, self.url.port, keepalive=30)
        except OSError as exc:
            raise BrokerError(f"broker {self.url.redacted()} unreachable: {exc}") from exc
        client.loop_start()
        try:
            session.wait_subscribed(self.timeout, self.url)
            answers: list[dict[str, Any]] = []
            for start in range(0, len(commands), COMMANDS_PER_MESSAGE):
                sent = commands[start : start + COMMANDS_PER_MESSAGE]
                got = session.send(sent, self.timeout)
                answers += got
                if answered is not None:  # what the broker did, even if a later part fails
                    answered += got
                if each is not None:
                    each(sent, got)
        finally:
            client.disconnect()
            client.loop_stop()
        failed = [a for a in answers if a.get("error")]
        if failed:
            raise BrokerRefused("; ".join(f"{a.get('command')}: {a['error']}" for a in failed))
        return answers


class _Session:
    """One connection's request/response exchange, matched by correlation data."""

    def __init__(self, client: mqtt.Client) -> None:
        self._client = client
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._answers: dict[str, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        client.on_connect = self._connected
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = self._message

    def _connected(
        self, client: mqtt.Client, _u: object, _f: object, code: Any, _p: object
    ) -> None:
        if code.is_failure:
            self._refused = str(code)
            self._subscribed.set()
            return
        client.subscribe(f"{CONTROL_TOPIC}/response", qos=1)

    def _message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return  # not a dynamic-security answer; nothing of ours to match
        with self._arrived:
            for response in responses:
                self._answers[str(response.get("correlationData"))] = response
            self._arrived.notify_all()

    def wait_subscribed(self, timeout: float, url: MqttUrl) -> None:
        if not self._subscribed.wait(timeout):
            raise BrokerError(f"broker {url.redacted()} did not answer within {timeout}s")
        if self._refused:
            raise BrokerRefused(f"broker {url.redacted()} refused the admin login: {self._refused}")

    def send(self, commands: Sequence[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        ids = [secrets.token_hex(8) for _ in commands]
        body = [{**c, "correlationData": i} for c, i in zip(commands, ids, strict=True)]
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": body}), qos=1)
        with self._arrived:
            if not self._arrived.wait_for(lambda: all(i in self._answers for i in ids), timeout):
                raise BrokerUnanswered(
                    f"the broker did not answer {len(ids)} commands in {timeout}s"
                )
            return [self._answers.pop(i) for i in ids]
