"""Unit conversions from what vendors send to the canonical unit a profile stores.

Each entry is (from, to) → (factor, offset): canonical = value × factor + offset. Only linear
conversions are needed for city telemetry. A vendor variant naming a unit pair missing here is
refused by `citysense profiles check`, rather than stored unconverted.
"""

from __future__ import annotations

Conversion = tuple[float, float]

_LINEAR: dict[tuple[str, str], Conversion] = {
    # pressure
    ("MPa", "kPa"): (1000.0, 0.0),
    ("bar", "kPa"): (100.0, 0.0),
    ("mbar", "kPa"): (0.1, 0.0),
    ("Pa", "kPa"): (0.001, 0.0),
    ("psi", "kPa"): (6.894757293168, 0.0),
    # energy and power
    ("Wh", "kWh"): (0.001, 0.0),
    ("MWh", "kWh"): (1000.0, 0.0),
    ("W", "kW"): (0.001, 0.0),
    ("kW", "W"): (1000.0, 0.0),
    ("var", "kvar"): (0.001, 0.0),
    # electricity
    ("mA", "A"): (0.001, 0.0),
    ("mV", "V"): (0.001, 0.0),
    ("kV", "V"): (1000.0, 0.0),
    # flow and volume
    ("L/s", "m3/h"): (3.6, 0.0),
    ("L/min", "m3/h"): (0.06, 0.0),
    ("L", "m3"): (0.001, 0.0),
    # temperature
    ("degF", "Cel"): (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("K", "Cel"): (1.0, -273.15),
    # ratios
    ("%", "1"): (0.01, 0.0),
    ("1", "%"): (100.0, 0.0),
}


def conversion(source: str, target: str) -> Conversion | None:
    """(factor, offset) from `source` to `target`; identity for equal units; None if unknown."""
    if source == target:
        return (1.0, 0.0)
    return _LINEAR.get((source, target))


def known_pairs() -> list[tuple[str, str]]:
    return sorted(_LINEAR)


def apply(value: float, conv: Conversion) -> float:
    """The canonical value, to 12 significant digits so that 550 mA is 0.55 A and not
    0.5500000000000002 A; ingest and the simulators both use this, so they agree exactly."""
    factor, offset = conv
    return float(f"{value * factor + offset:.12g}")
