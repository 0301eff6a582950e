"""The OGC SensorThings API 1.1 (sensing part, read only) over the registry, the profiles and
InfluxDB, with no second copy of the data. Nothing here knows HTTP: api.routes.sta parses the
request into a `StaRequest` and answers with what `service.answer` returns.

    Things, Locations, FeaturesOfInterest   the registry's devices (catalog.py, entities.py)
    Sensors, ObservedProperties             the profiles, their vendor variants and fields
    Datastreams                             one per device and field
    Observations                            stored readings, queried from InfluxDB (observations.py)

Query options are parsed in options.py ($filter by odata-query in filtering.py), evaluated in
memory over the registry (evaluate.py) and translated to InfluxQL for Observations (pushdown.py).
"""
