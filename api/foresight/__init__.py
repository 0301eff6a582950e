"""Foresight: signals computed from the stored readings on a schedule, beyond thresholds on one
reading — the minimum night flow of each water node and district and the leaks it reveals, lamps
judged against sunrise and sunset at their own pole (astral), the day-ahead forecast of energy
per district (statsmodels), and a data-quality score per device and district.

- `nightflow`, `lamps`, `forecast`, `quality`: the pure logic, over rows, knowing no database;
- `queries`: the InfluxQL they need (identifiers from the contract, values bound);
- `store`: their results as the measurements `signals`, `forecasts` and `quality` (line
  protocol by wire.lineproto), and reading those back for the API;
- `run`: one round over InfluxDB, and the supervised background task that repeats it and raises
  the alarms the profiles' `signals` rules declare.

Nothing here knows HTTP.
"""
