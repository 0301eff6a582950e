"""Ingest: consume → decode → validate → enrich → encode → batch → write, acknowledging after store.

Each stage is a module; `pipeline.py` chains the pure stages for one MQTT message, `worker.py`
wires the MQTT consumer, the batcher and the InfluxDB writer together.
"""
