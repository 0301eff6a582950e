"""The operations screen measured and pictured in Debian's Chromium: `bench.screen_bench` (100,000
devices: first render, a live rate of 1,000 readings/s) and `bench.screen.shots` (the README's
screenshots of both modes)."""
