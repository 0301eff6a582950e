"""What crosses the wire between CitySense's services: the one home of every contract that
ingest, the API and the simulators share besides the device profiles themselves.

- `topics`: the MQTT topic tree (telemetry, connection status, the state feed)
- `statefeed`: what ingest announces after each stored batch, and how the API reads it
- `lineproto`: InfluxDB line protocol, the one encoder (and reader) of the tree
- `reasons`: why a message or reading was rejected, one stable code each
- `deadletters`: how a rejection is stored (measurement, tags, fields, payload encoding)
- `changes`: change marks, how ingest tells readers which windows of data changed

Nothing here imports another CitySense package.
"""
