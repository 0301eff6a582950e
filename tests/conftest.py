"""What every test shares: Hypothesis without deadlines, and a part of the free ports each.

Hypothesis fails an example that takes longer than 200 ms by default: a timed assertion, which a
loaded CI machine breaks at random (a one-line filter parse took 2.3 s once, 0.5 ms when
retried). What the properties check is correctness; speed is measured by the benchmarks.

The suite's two processes (pytest-xdist) each start servers on ports drawn from a part of
citysense.servers.FREE_PORTS of their own (CITYSENSE_FREE_PORTS): drawn from the whole, one
process's port of a server it had stopped (a fault test's outage) went to the other's server,
and a readiness check was answered by the wrong one."""

import os

from hypothesis import settings

from citysense.servers import FREE_PORTS

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, …; unset without xdist
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    _share = len(FREE_PORTS) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    _low = FREE_PORTS.start + int(_WORKER[2:]) * _share
    os.environ["CITYSENSE_FREE_PORTS"] = f"{_low}-{_low + _share - 1}"

settings.register_profile("citysense", deadline=None)
settings.load_profile("citysense")
