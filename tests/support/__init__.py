"""Helpers the tests share, one small module each; fixtures are in tests/integration/conftest.py.

- servers: the loopback Mosquitto and InfluxDB a test run starts, and the topic root they allow
- polling: waiting for a condition, in a thread (`wait_for`) or in a coroutine (`until`)
- mqtt: an independent publisher and subscriber, a restart-proof stream, retained messages
- influx: a fresh database, and reading back what it holds
- processes: `citysense ingest` as a real process, its environment, and /proc readings
- clock: a clock a test sets by hand
- times: nanosecond units, RFC 3339 text, yesterday's midnight
- seeding: readings written straight into InfluxDB, and the sample devices the API tests use
- api: API settings, the app running in process with a client, access tokens
- deadletters: dead letters as ingest stores them, written without ingest
- state: the API's live state fed as ingest would feed it
- faults: the fault suite's unique-valued streams and its exact accounting
- fuzz_messages: the fuzz suite's messages and the expectations written from the contract
"""
