# One image for every CitySense service of docker-compose.yml (broker, InfluxDB, ingest, API,
# simulator): Debian's Mosquitto and InfluxDB packages and the citysense command, run as the
# unprivileged user `citysense` (uid 10001). No secret is baked in: compose mounts them at run time.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      mosquitto influxdb python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 citysense \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/citysense --create-home citysense \
 && install -d -o citysense -g citysense /var/lib/citysense/mosquitto /var/lib/citysense/influxdb \
      /var/lib/citysense/spool /var/lib/citysense/api
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
USER citysense
WORKDIR /var/lib/citysense
EXPOSE 1883 8883 8000 8086 9101
CMD ["citysense", "--help"]
