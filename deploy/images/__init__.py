"""The container image test: the Dockerfile's targets built on stand-in bases and run (check.py)."""
