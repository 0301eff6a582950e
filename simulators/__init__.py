"""Simulated fleets of city devices that publish realistic telemetry over MQTT."""
