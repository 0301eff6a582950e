"""`citysense simulate`: publish a simulated fleet, then print a JSON summary on stdout.

    citysense simulate --devices 600 --readings-per-device 20 --fault-ratio 0.02
    citysense simulate --mode live --rate 50            # until SIGTERM or Ctrl-C
    citysense simulate --registry-out big.csv --city-size 100000

Broker, topic root, profiles and registry come from the CITYSENSE_* settings. A setting or an
option that is wrong ends the run with a message and exit status 2; a broker that refuses us
with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from common.errors import BrokerError, ConfigError
from common.settings import CommonSettings, settings_problems
from device_profiles import ContractError, Device
from simulators.city import write_city
from simulators.faults import ALL_FAULTS
from simulators.fleet import BACKFILL, LIVE, TIME_MODES, generate
from simulators.models import DEFAULT_UTC_OFFSET_HOURS
from simulators.publish import publish

DEFAULT_BACKFILL_READINGS = 10
PROG = "citysense simulate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=int, help="how many registry devices, mixed across profiles (all)"
    )
    parser.add_argument(
        "--readings-per-device",
        type=int,
        help=f"readings per device (backfill: {DEFAULT_BACKFILL_READINGS}; live: 0 = endless)",
    )
    parser.add_argument(
        "--mode",
        choices=TIME_MODES,
        default=BACKFILL,
        help="backfill: recent history, sent at once; live: readings stamped and sent as they"
        " fall due (default backfill)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="messages per second, 0 = as fast as possible; in live mode the fleet reports"
        " often enough to produce this rate (0: each profile's own interval)",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds, 0 = no limit"
    )
    parser.add_argument(
        "--interval", type=float, help="reporting interval in seconds for every device"
    )
    parser.add_argument("--array-ratio", type=float, default=0.1, help="share of array messages")
    parser.add_argument("--max-array", type=int, default=5, help="readings in an array, at most")
    parser.add_argument("--fault-ratio", type=float, default=0.0, help="share of faulty messages")
    parser.add_argument(
        "--faults",
        default=",".join(ALL_FAULTS),
        help=f"fault kinds to inject, comma-separated (default {','.join(ALL_FAULTS)})",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--utc-offset",
        type=float,
        default=DEFAULT_UTC_OFFSET_HOURS,
        help="the city's time zone in hours, for day and night (default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--registry-out", type=Path, help="write a generated registry CSV here and exit"
    )
    parser.add_argument(
        "--city-size", type=int, default=3000, help="devices in --registry-out (default 3000)"
    )


def main(args: argparse.Namespace) -> int:
    try:
        if args.registry_out is not None:
            return _write_registry(args.registry_out, args.city_size)
        return _simulate(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second signal while waiting for the broker's acks
        print(f"{PROG}: aborted", file=sys.stderr)
        return 130


def _write_registry(path: Path, size: int) -> int:
    if size < 1:
        raise ValueError(f"--city-size must be at least 1, not {size}")
    with path.open("w", encoding="utf-8", newline="") as out:
        written = write_city(out, size)
    _summary({"registry": str(path), "devices": written})
    return 0


def _simulate(args: argparse.Namespace) -> int:
    try:
        settings = CommonSettings()
    except ValidationError as exc:
        print(f"{PROG}: invalid settings:\n{settings_problems(exc)}", file=sys.stderr)
        return 2
    try:
        profiles, registry = settings.load_contract()
    except ContractError as exc:
        print(f"{PROG}: invalid device profiles or registry:\n{exc}", file=sys.stderr)
        return 2
    if args.rate < 0 or args.duration < 0:
        raise ValueError("--rate and --duration cannot be negative")
    devices = pick_devices(list(registry.devices.values()), args.devices)
    readings = args.readings_per_device
    if readings is None:
        readings = DEFAULT_BACKFILL_READINGS if args.mode == BACKFILL else 0
    messages = generate(
        devices,
        profiles,
        settings.topics,
        readings_per_device=readings,
        array_ratio=args.array_ratio,
        max_array=args.max_array,
        fault_ratio=args.fault_ratio,
        faults=[kind.strip() for kind in args.faults.split(",") if kind.strip()],
        seed=args.seed,
        time_mode=args.mode,
        interval_s=args.interval or _live_interval(args, len(devices)),
        utc_offset_hours=args.utc_offset,
    )
    url = settings.mqtt
    progress = not args.no_progress
    if progress:
        print(
            f"simulating {len(devices)} devices ({args.mode}) on {url.redacted()},"
            f" topic root {settings.topic_root!r}",
            file=sys.stderr,
            flush=True,
        )
    stop = _stop_on_signals()
    report = publish(
        url,
        messages,
        rate=args.rate,
        duration=args.duration or None,
        pace=args.mode == LIVE,
        progress=progress,
        stop=stop,
    )
    _summary(
        {
            "mode": args.mode,
            "devices": len(devices),
            "devices_by_profile": dict(Counter(d.profile for d in devices)),
            "broker": url.redacted(),
            "topic_root": settings.topic_root,
            "seed": args.seed,
            **report.as_dict(),
        }
    )
    return 0


def pick_devices(devices: Sequence[Device], count: int | None) -> list[Device]:
    """`count` devices with each profile's share of the registry, kept in registry order."""
    if count is None:
        return list(devices)
    if count < 1:
        raise ValueError(f"--devices must be at least 1, not {count}")
    totals = Counter(d.profile for d in devices)
    seen: Counter[str] = Counter()
    ranked: list[tuple[float, int]] = []
    for position, device in enumerate(devices):
        # The k-th device of a profile with n devices sits at (k + 0.5) / n along its profile;
        # taking the lowest across profiles picks them in proportion.
        ranked.append(((seen[device.profile] + 0.5) / totals[device.profile], position))
        seen[device.profile] += 1
    chosen = sorted(position for _, position in sorted(ranked)[:count])
    return [devices[position] for position in chosen]


def _live_interval(args: argparse.Namespace, devices: int) -> float | None:
    """In live mode with a rate: how often each device reports so the fleet sends `rate` msg/s."""
    if args.mode != LIVE or args.rate <= 0:
        return None
    array_ratio, max_array, rate = float(args.array_ratio), int(args.max_array), float(args.rate)
    # A device sends one message per `readings_per_message` readings, one reading per interval.
    readings_per_message = (1 - array_ratio) + array_ratio * (2 + max_array) / 2
    # Devices stamping whole seconds cannot report more often than once a second.
    return max(1.0, devices / (rate * readings_per_message))


def _stop_on_signals() -> threading.Event:
    """SIGTERM or Ctrl-C: stop taking messages, wait for the broker's acks, print the summary.
    A second signal aborts at once."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _summary(data: dict[str, object]) -> None:
    print(json.dumps(data), flush=True)
