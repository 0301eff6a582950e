"""CitySense HTTP API: latest device state, field history and district summaries for city apps."""
