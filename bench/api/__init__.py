"""The pieces of `python -m bench.api_bench` (the entry, its arguments and its description are in
bench/api_bench.py), one module per step:

- constants: names, addresses and thresholds the steps share;
- figures: timings, percentiles, the report table, the machine;
- history: the registry and its history, loaded straight into InfluxDB;
- processes: the API and ingest worker as child processes (citysense.children);
- timing: timed requests;
- devices: latest state, GeoJSON and one device's history;
- aggregates: aggregations across devices, first asked, asked again, after live ingest;
- sse: Server-Sent-Events clients while ingest stores live readings;
- run: the whole benchmark, step by step.
"""
