"""CitySense, the application: the `citysense` command, `citysense up` and the local servers it
runs. It imports the services (ingest, api, simulators); nothing imports it."""
