"""The API benchmark, `python -m bench.api_bench` (its command line and description are in
bench/api_bench.py), a module per step:

- constants: names, addresses and thresholds the steps share;
- figures: timings, percentiles, the report table, the machine;
- history: steps 1-2, the registry and its history loaded straight into InfluxDB;
- processes: what the steps share (Stack); the API (step 3) and an ingest worker (step 5) as
  child processes (citysense.children);
- timing: timed requests;
- devices: step 4, latest state, GeoJSON and one device's history;
- aggregates: step 4's aggregations across devices, first asked, asked again, after live ingest;
- sse: step 5, Server-Sent-Events clients while ingest stores live readings;
- delivery: step 5's figures, what each client got and how fast, and the CPU used meanwhile;
- run: the whole benchmark, step by step, and step 6, stopping everything it started.
"""
