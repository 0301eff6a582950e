"""Simulated fleets of city devices that publish realistic telemetry over MQTT.

- `models`: per-device value models (lamp schedule, water demand, load curves), shaped by the
  profile; `curves`: the daily shapes they follow.
- `faults`: injected firmware faults and the reason code ingest records for each.
- `fleet`: `generate()`, the fleet as a stream of messages with their expected readings.
- `publish`: a QoS 1 publisher that waits for every acknowledgement.
- `cli`: `citysense simulate`; `city`: generated registries.
"""
