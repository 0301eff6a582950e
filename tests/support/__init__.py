"""Helpers the tests share, one small module each; fixtures live in the conftest.py files.

- servers: the loopback Mosquitto and InfluxDB a test run starts, and the topic root they allow
- polling: waiting for a condition, in a thread (`wait_for`) or in a coroutine (`until`)
- mqtt: an independent publisher and subscriber, a restart-proof stream, retained messages
- influx: a fresh database, and reading back what it holds
- processes: `citysense ingest` as a real process, its environment, and /proc readings
- faults: the fault suite's unique-valued streams and its exact accounting
- fuzz_messages: the fuzz suite's messages and the expectations written from the contract
"""
