# CitySense in one container: Debian's Mosquitto and InfluxDB, the ingest worker, the API and a
# simulated city, started by `citysense up` exactly as on a developer's machine.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      mosquitto mosquitto-clients influxdb python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/citysense
COPY pyproject.toml README.md ./
COPY wire wire
COPY common common
COPY citysense citysense
COPY ingest ingest
COPY api api
COPY device_profiles device_profiles
COPY simulators simulators
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /data
EXPOSE 1883 8000 8086 9101
CMD ["citysense", "up", "--listen", "0.0.0.0"]
