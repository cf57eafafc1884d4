"""Load tests for weather-api: the Locust profiles, their ledger, and the tools around them.

`locustfile.py` is what Locust runs; `run.py` wraps it for `task loadtest` (results folder,
defaults, exit code); `verify.py` compares a run's ledger with Valkey; `reset.py` empties the
weather data. See README.md.
"""
