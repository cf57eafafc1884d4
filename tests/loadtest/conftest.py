"""The load-test tests use the root fixtures (tests/conftest.py): `api`, `valkey_url`."""
