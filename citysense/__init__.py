"""CitySense: shared plumbing (InfluxDB client, MQTT URLs, local servers) and the command line."""

__version__ = "0.1.0"
