"""The SensorThings MQTT extension (receive updates): every reading ingest announces as stored
(the state feed, api.live) is published as Observations on
`v1.1/Datastreams('<device id>:<field>')/Observations`, one message per field, QoS 0 — a client
subscribed there receives new observations as they are stored. The broker's ACL says who may
read those topics (citysense/dynsec.py: the API writes, `citysense-sta` reads).

Publishing never blocks the event loop: paho only queues the message for its own network thread.
The queue is bounded: at most MAX_QUEUED messages of at most MAX_PAYLOAD bytes each (a larger
observation, a long text field, is not published and is counted); past that, messages are
dropped and counted rather than held in memory while the broker is away. A failure of the
publisher itself is not caught here: it ends the live feed's task, which the supervisor reports
(api.core.supervise).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from api.sta import entities
from common.mqtturl import MqttUrl
from device_profiles import Profile
from wire import statefeed

logger = logging.getLogger(__name__)

PREFIX = "v1.1"
MAX_QUEUED = 10_000
MAX_PAYLOAD = 4096


def topic(datastream_id: str) -> str:
    return f"{PREFIX}/Datastreams('{datastream_id}')/Observations"


class ObservationPublisher:
    def __init__(self, url: MqttUrl, profiles: Mapping[str, Profile]) -> None:
        self._url = url
        self._profiles = profiles
        self.published = 0
        self.dropped = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"citysense-api-sta-{secrets.token_hex(6)}",
            clean_session=True,
        )
        url.configure(self._client)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)

    def start(self) -> None:
        # connect_async: a broker down at start must not stop the API; paho keeps retrying.
        self._client.connect_async(self._url.host, self._url.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        threading.Thread(target=self._client.loop_stop, name="sta-mqtt-stop", daemon=True).start()

    def publish(self, readings: list[statefeed.Announced]) -> None:
        """Each field of each reading as an Observation on its Datastream's topic."""
        for reading in readings:
            profile = self._profiles.get(reading.profile)
            if profile is None:
                continue  # a measurement this contract does not know: no Datastream
            for field, value in reading.values.items():
                if field in profile.fields:
                    self._send(f"{reading.device_id}:{field}", reading.time_ns, value)

    def _send(self, datastream_id: str, time_ns: int, value: Any) -> None:
        body = {"@iot.id": f"{datastream_id}:{time_ns}", **entities.observation(time_ns, value)}
        payload = orjson.dumps(body)
        if len(payload) > MAX_PAYLOAD:
            self.dropped += 1
            return
        info = self._client.publish(topic(datastream_id), payload, qos=0)
        if info.rc is MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.published += 1
            return
        # Not connected or the queue is full: dropped, like any QoS 0 message; said once.
        if not self.dropped:
            logger.warning("SensorThings MQTT: dropping observations (%s)", info.rc)
        self.dropped += 1
