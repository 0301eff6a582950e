"""Foresight's signals judged against the profiles' signal rules: each device's newest value of
each signal in a round, and a judgment (breached or not) per rule, for the live alarm book."""

from __future__ import annotations

from dataclasses import dataclass

from api.core.contract import Contract
from api.foresight import store
from api.foresight.run import Round
from device_profiles import AlarmOp, AlarmRule, SignalName, SignalRule


@dataclass(frozen=True, slots=True)
class Judgment:
    rule: SignalRule
    device_id: str
    value: float
    time_ns: int

    @property
    def breached(self) -> bool:
        if self.rule.op is AlarmOp.ABOVE:
            return self.value > self.rule.threshold
        return self.value < self.rule.threshold

    def as_alarm(self) -> AlarmRule:
        return AlarmRule(
            name=self.rule.name,
            field=self.rule.signal.value,
            op=self.rule.op,
            threshold=self.rule.threshold,
            severity=self.rule.severity,
            description=self.rule.description,
        )


def _latest(values: dict[str, tuple[int, float]], key: str, when: int, value: float) -> None:
    if key not in values or values[key][0] <= when:
        values[key] = (when, value)


def latest_values(result: Round) -> dict[SignalName, dict[str, tuple[int, float]]]:
    """Each device's newest value of each signal in the round."""
    out: dict[SignalName, dict[str, tuple[int, float]]] = {s: {} for s in SignalName}
    zone = result.zone
    for rows in result.night_flow.values():
        for r in rows:
            # The leak rule is judged on the leak detector's verdict, its value the rise.
            rise = (r.rise or 0.0) if r.leak else min(r.rise or 0.0, 0.0)
            _latest(out[SignalName.NIGHT_FLOW_RISE], r.device_id, store.day_ns(r.night, zone), rise)
    for district, days in result.lamp_days.items():
        for d in days:
            when = store.day_ns(d.day, zone)
            for signal, value in (
                (SignalName.LIT_BY_DAY, d.lit_by_day),
                (SignalName.DARK_BY_NIGHT, d.dark_by_night),
                (SignalName.POWER_WHILE_OFF, d.power_while_off),
                (SignalName.POWER_DRIFT, result.drift.get(district, {}).get((d.device_id, d.day))),
            ):
                if value is not None:
                    _latest(out[signal], d.device_id, when, value)
    for q in result.devices_quality:
        _latest(out[SignalName.QUALITY_SCORE], q.device_id, result.days.end_ns, q.score)
    return out


def judgments(result: Round, contract: Contract) -> list[Judgment]:
    values = latest_values(result)
    out = []
    for signal, per_device in values.items():
        for device_id, (when, value) in sorted(per_device.items()):
            device = contract.device(device_id)
            if device is None:
                continue
            for rule in contract.profiles[device.profile].signals:
                if rule.signal is signal:
                    out.append(Judgment(rule, device_id, value, when))
    return out
