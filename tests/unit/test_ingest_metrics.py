"""Ingest's /metrics is Prometheus text a scraper takes as it is: every family with HELP and
TYPE, counters as _total, the write-latency histogram, rejections by profile and reason."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ingest.stats import Stats
from wire.reasons import Reason


def test_every_family_has_help_and_parses() -> None:
    stats = Stats()
    stats.message_taken(5)
    stats.add(readings_stored=5, messages_acked=1)
    stats.observe_write(0.02)
    stats.rejected("water_pipe", Reason.OUT_OF_RANGE)
    stats.gauges["held_bytes"] = lambda: 1234.0
    text = stats.prometheus()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(f.documentation for f in families.values())
    assert families["citysense_ingest_readings_stored"].type == "counter"
    assert families["citysense_ingest_held_bytes"].samples[0].value == 1234.0
    [rejected] = families["citysense_ingest_rejected"].samples
    assert rejected.labels == {"profile": "water_pipe", "reason": "out_of_range"}
    latency = families["citysense_ingest_write_latency_seconds"]
    count = next(s for s in latency.samples if s.name.endswith("_count"))
    assert count.value == 1
    for line in text.splitlines():
        if line.startswith("citysense_ingest_received_total "):
            assert float(line.split()[1]) == 1
