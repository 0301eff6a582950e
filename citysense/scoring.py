"""Foresight's signals scored against what the scenario injected (simulators.scenario's truth)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from api.foresight.run import Round

FOUND_WITHIN_NIGHTS = 3


@dataclass(frozen=True, slots=True)
class Detection:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 3),
            "recall": round(self.recall, 3),
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
        }


def _sets(truth: set[Any], found: set[Any]) -> Detection:
    return Detection(len(truth & found), len(found - truth), len(truth - found))


def leaks(result: Round, truth: dict[str, Any]) -> dict[str, Any]:
    """A leak is found when its node's leak opens on its first night or the next, so that the
    confirming night is at most the third: within 3 nights."""
    opened = {
        (r.device_id, r.leak_start)
        for rows in result.night_flow.values()
        for r in rows
        if r.leak_start is not None
    }
    real = {(t["device_id"], date.fromisoformat(t["start_night"])) for t in truth["leaks"]}
    matched = set()
    for device_id, night in real:
        for delay in range(FOUND_WITHIN_NIGHTS - 1):
            if (device_id, night + timedelta(days=delay)) in opened:
                matched.add((device_id, night + timedelta(days=delay)))
    score = Detection(len(matched), len(opened - matched), len(real) - len(matched))
    return {**score.as_dict(), "leaks": len(real), "smallest_share": _smallest(truth)}


def _smallest(truth: dict[str, Any]) -> float | None:
    shares = [t["share_of_night_flow"] for t in truth["leaks"]]
    return min(shares) if shares else None


def _days(record: dict[str, Any]) -> list[date]:
    first, until = date.fromisoformat(record["from"]), date.fromisoformat(record["until"])
    return [first + timedelta(days=n) for n in range((until - first).days)]


def lamps_by_day(result: Round, truth: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Scored per lamp and day; and how many lamp-days of correctly switched lamps were blamed."""
    faults = truth["lamps"]
    real = {(r["device_id"], d) for r in faults["burning_by_day"] for d in _days(r)}
    found = {
        (d.device_id, d.day)
        for days in result.lamp_days.values()
        for d in days
        if d.lit_by_day is not None and d.lit_by_day > threshold
    }
    faulty = {r["device_id"] for kind in faults.values() for r in kind}
    correct = sum(1 for device_id, _ in found if device_id not in faulty)
    return {**_sets(real, found).as_dict(), "blamed_lamp_days_of_correct_lamps": correct}


def lamps_per_lamp(found: set[str], records: list[dict[str, Any]]) -> dict[str, Any]:
    return _sets({r["device_id"] for r in records}, found).as_dict()


def lamp_faults(
    result: Round, truth: dict[str, Any], thresholds: dict[str, float]
) -> dict[str, Any]:
    days = [d for group in result.lamp_days.values() for d in group]
    drift = {k: v for group in result.drift.values() for k, v in group.items()}
    dark = {d.device_id for d in days if (d.dark_by_night or 0) > thresholds["dark_by_night"]}
    off = {d.device_id for d in days if (d.power_while_off or 0) > thresholds["power_while_off"]}
    driver = {device for (device, _), v in drift.items() if v > thresholds["power_drift"]}
    faults = truth["lamps"]
    return {
        "dark_at_night": lamps_per_lamp(dark, faults["dark_at_night"]),
        "power_while_off": lamps_per_lamp(off, faults["power_while_off"]),
        "failing_driver": lamps_per_lamp(driver, faults["failing_drivers"]),
    }


def forecasts(result: Round) -> dict[str, Any]:
    out = {}
    for district, days in result.backtest.items():
        if days:
            out[district] = {
                "days": len(days),
                "mape_model": round(statistics.fmean(d.mape_model for d in days), 2),
                "mape_seasonal_naive": round(statistics.fmean(d.mape_naive for d in days), 2),
            }
    return out


def quality(result: Round, truth: dict[str, Any]) -> dict[str, Any]:
    """The injected faulty devices should be the k lowest scores (k: how many were injected)."""
    faulty = {f["device_id"]: f["fault"] for f in truth["quality_faults"]}
    ranked = sorted(result.devices_quality, key=lambda d: (d.score, d.device_id))
    top = {d.device_id for d in ranked[: len(faulty)]}
    healthy = [d.score for d in ranked if d.device_id not in faulty]
    return {
        "faulty_devices": len(faulty),
        "faulty_in_worst_k": len(top & faulty.keys()),
        "precision_at_k": round(len(top & faulty.keys()) / len(faulty), 3) if faulty else 1.0,
        "worst_faulty_rank": max(
            (n + 1 for n, d in enumerate(ranked) if d.device_id in faulty), default=0
        ),
        "highest_faulty_score": round(
            max((d.score for d in ranked if d.device_id in faulty), default=0.0), 3
        ),
        "lowest_healthy_score": round(min(healthy), 3) if healthy else None,
        "by_fault": {
            faulty[d.device_id]: round(d.score, 3) for d in ranked if d.device_id in faulty
        },
    }
