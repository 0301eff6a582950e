"""The library every CitySense service imports: the InfluxDB HTTP client, the error tree,
settings shared by the services, MQTT URLs, JSON logs and child-process plumbing.

It knows nothing of ingest, the API or the simulators, and nothing of the command line
(`citysense/`, the application layer, sits above them all)."""

__version__ = "0.1.0"
