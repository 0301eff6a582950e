"""`citysense evaluate`'s pipeline, shortened (15 days, a small fleet): the scenario through the
real broker, ingest and InfluxDB, foresight computed from what was stored, and the detection
thresholds of issue #14 asserted on the scores against the injected truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from citysense.evaluate import Pipeline, evaluate
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from simulators.scenario import ScenarioSpec
from tests.support.influx import rows

pytestmark = pytest.mark.integration


def test_a_simulated_fortnight_is_scored_against_its_truth(
    servers: LocalServers, influx: InfluxConfig, topic_root: str, tmp_path: Path
) -> None:
    spec = ScenarioSpec(days=15, water=8, lamps=16, meters=8, seed=3)
    pipeline = Pipeline(
        servers.mosquitto.url("citysense-simulator"),
        servers.mosquitto.url("citysense-ingest"),
        influx,
        topic_root,
    )
    report = evaluate(spec, pipeline, tmp_path)
    truth = report["truth"]
    assert report["pipeline"]["readings_stored"] > 40_000

    leaks = report["leaks"]
    assert leaks["leaks"] == len(truth["leaks"]) >= 2
    assert leaks["precision"] >= 0.9 and leaks["recall"] >= 0.9

    lamps = report["lamps_burning_by_day"]
    assert lamps["true_positives"] >= 2
    assert lamps["precision"] >= 0.95 and lamps["recall"] >= 0.95
    assert lamps["blamed_lamp_days_of_correct_lamps"] == 0

    (scores,) = report["forecast"].values()
    assert scores["days"] == 15 - 8
    assert scores["mape_model"] < scores["mape_seasonal_naive"]

    quality = report["quality"]
    assert quality["faulty_devices"] == len(truth["quality_faults"]) == 7
    assert quality["precision_at_k"] == 1.0
    assert quality["highest_faulty_score"] < quality["lowest_healthy_score"]

    # The round's results were stored as foresight's own measurements.
    stored = rows(influx, 'SELECT * FROM "signals" WHERE "leak" = true')
    assert {r["device_id"] for r in stored} == {t["device_id"] for t in truth["leaks"]}
    assert rows(influx, 'SELECT * FROM "forecasts"')
    assert len(rows(influx, 'SELECT * FROM "quality" WHERE "device_id" != \'\'')) == 32
