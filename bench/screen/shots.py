"""The README's screenshots of the operations screen, desk and wall mode, from a real run: the
sample city (3,000 devices) with a day of history, a live simulated fleet with a few faulty
messages, and some devices pushed into alarm.

    .venv/bin/python -m bench.screen.shots            (or scripts/screenshots.sh)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.screen.browser import chromium, signed_in
from bench.screen.stack import ROOT, Stack, stack
from citysense.children import get_local
from citysense.servers import free_port
from common.mqtturl import MqttUrl

DOCS = Path(__file__).resolve().parents[2] / "docs"
# (profile, device, values): readings that break the profiles' alarm rules at once.
ALARMS: list[tuple[str, str, dict[str, object]]] = [
    ("streetlight", "SL-000007", {"powerState": "on", "tiltAngle": 12.0}),
    ("streetlight", "SL-000212", {"powerState": "on", "status": "defectiveLamp"}),
    ("water_pipe", "WP-000031", {"pressure": 310.0, "leakDetected": True}),
    ("water_pipe", "WP-000150", {"pressure": 280.0, "batteryLevel": 9.0}),
]


def populate(run: Stack) -> None:
    """Ingest and the API; a day of history (every 30 min); then the fleet live, with faults."""
    port = str(free_port())
    ingest = run.start(
        "ingest", user="citysense-ingest",
        CITYSENSE_HTTP_PORT=port, CITYSENSE_SPOOL_DIR=str(run.home / "spool"),
    )  # fmt: skip
    ingest.wait_http(f"http://127.0.0.1:{port}/ready", 60)
    backfill = run.start(
        "simulate", "--mode", "backfill", "--interval", "1800", "--readings-per-device", "48",
        "--fault-ratio", "0.01", "--no-progress", user="citysense-simulator",
    )  # fmt: skip
    if backfill.reap(900) != 0:
        raise RuntimeError(f"backfill failed:\n{backfill.tail()}")
    # The fleet goes live at once (every device reports about every 30 s), while ingest stores the
    # day; the API starts once that is stored, so that no device looks silent meanwhile.
    run.start(
        "simulate", "--mode", "live", "--rate", "100", "--duration", "0", "--fault-ratio", "0.02",
        "--seed", "2", "--no-progress", user="citysense-simulator",
    )  # fmt: skip
    ingest.wait_until(lambda: settled(f"http://127.0.0.1:{port}/metrics"), 600, "ingest done")
    run.start_api()


def settled(metrics: str, counter: str = "citysense_ingest_readings_stored_total") -> bool:
    """Whether ingest caught up with the backfill: it stores no more than the live fleet's pace."""

    def stored() -> float:
        for line in get_local(metrics).text.splitlines():
            if line.startswith(counter + " "):
                return float(line.split()[1])
        return 0.0

    before = stored()
    time.sleep(1.0)
    return before > 0 and stored() - before < 1000


def raise_alarms(run: Stack) -> None:
    url = MqttUrl.parse(run.servers.mosquitto.url("citysense-simulator"))
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(url.username, url.password)
    client.connect(url.host, url.port)
    client.loop_start()
    for profile, device, values in ALARMS:
        payload = json.dumps({"ts": time.time(), **values}).encode()
        client.publish(f"{ROOT}/{profile}/{device}/telemetry", payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def shoot(run: Stack, out: Path) -> list[Path]:
    desk, wall = out / "screen-desk.png", out / "screen-wall.png"
    with chromium() as browser:
        print("desk mode ...", flush=True)
        page = signed_in(browser, run.base, run.token, "?lang=en")
        page.wait_for_function("() => window.citysense.events > 50", timeout=60_000)
        page.evaluate("citysense.app.select('WP-000031')")
        page.wait_for_selector("#device figure", timeout=30_000)
        page.wait_for_timeout(1500)  # let the charts and the live counters settle
        page.screenshot(path=str(desk))
        print("wall mode ...", flush=True)
        page = signed_in(browser, run.base, run.token, "?mode=wall&lang=zh", (1920, 1080))
        page.wait_for_function("() => window.citysense.events > 50", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(wall))
    return [desk, wall]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="folder (default docs/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with stack() as run:
        print("starting servers, ingest and the API; loading a day of history ...", flush=True)
        populate(run)
        print("raising alarms ...", flush=True)
        raise_alarms(run)
        for path in shoot(run, args.out):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
