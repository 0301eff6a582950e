"""The API's latest-state cache against the number of devices: a benchmark, not a test (issue 15).

    .venv/bin/python -m bench.api_memory                       # 100,000 devices
    .venv/bin/python -m bench.api_memory --devices 1000000     # a region: registry and latest only

Starts its own Mosquitto and InfluxDB (temporary folder, free ports), writes a registry of
`--devices` devices (simulators.city) and one reading per device (the latest, within a minute of
now) straight into InfluxDB, then starts the API as a child process (`citysense api`,
authentication off) again and again, one after the other:

1. over an empty registry: the baseline, what the process holds before any device;
2. over the city: the start time (process start until /health answers 200, which uvicorn does only
   once the app's start-up, latest state of every device loaded, is done; and until GET /devices
   answers 200 rather than 503), its resident memory once serving, and a district's first page
   (limit 1000) and a single device, timed and checked. It has a data folder
   (CITYSENSE_API_DATA_DIR), empty: this start is the full load from InfluxDB (the readings were
   written without latest rows, as after an import, and no set-up built them: the API's own
   fallback), and the API writes its state snapshot (api.live.snapshot) after it and at
   shutdown;
3. stopped, a newer reading written for one district's streetlights (with their change marks, as
   ingest writes them), and started again: the restart from the snapshot, measured as in 2, the
   district's page checked to hold the newer readings. Then restarts after a reading of every
   (profile, district) part was written, announced on the state feed and not;
4. a new replica, with a data folder of its own and empty, started from the state of a running
   one (CITYSENSE_API_STATE_PEER), which took a newer reading of every part from its feed just
   before: measured as in 2, against 2's full load;
5. a replica with no snapshot and no peer: from the latest rows the full load made whole, then
   with a second and a third writer's rows of every device (ingest workers' rows, every field
   of a reading);
6. the first start ever over a new city: the same readings stored as ingest stores them (with
   their rows and marks) into a database set up empty, which says its rows whole from the start
   (common.schema): measured as in 2, against 2's full load;
7. the first start after an upgrade: every latest row dropped and the database no longer said
   whole (a version before the rows had none), then the deployment's set-up, `citysense schema`,
   building the rows from the readings (api.live.rebuild: timed, with its CPU and InfluxDB's),
   then the API started with no snapshot and no peer: measured as in 2, against 2's full load;
   then two workers' rows of a newer reading of every device, a start over the build's rows and
   theirs, which compacts the build's (api.live.compact, CITYSENSE_API_ROWS_COMPACT_AFTER=1),
   and a start after that.

The API's own log lines on what it loaded from where, and how long it took, are in the report.

Reports resident memory above the baseline per device. Figures of one run on one machine; the
ratio is against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os

from bench.api.memory import run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--loaders", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds the API may take to start"
    )
    return parser.parse_args()


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
