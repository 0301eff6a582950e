"""What every test shares: Hypothesis without deadlines.

Hypothesis fails an example that takes longer than 200 ms by default: a timed assertion, which a
loaded CI machine breaks at random (a one-line filter parse took 2.3 s once, 0.5 ms when
retried). What the properties check is correctness; speed is measured by the benchmarks."""

from hypothesis import settings

settings.register_profile("citysense", deadline=None)
settings.load_profile("citysense")
