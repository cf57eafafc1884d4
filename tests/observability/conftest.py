"""Fixtures for the observability tests: the generator package, parsed files, a Valkey client."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkey

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
# The generator lives in observability/ (mounted as config elsewhere, not an installed package).
sys.path.insert(0, str(OBSERVABILITY))

from weather_dashboards import checks, generate  # noqa: E402


@pytest.fixture(scope="session")
def datasources() -> dict[str, str]:
    """Provisioned data source uids -> plugin types."""
    defined, _ = checks.provisioned_datasources(generate.DATASOURCE_DIR)
    return defined


@pytest.fixture
def weather_board() -> dict:
    """The committed Weather dashboard, freshly parsed (tests may break it)."""
    return json.loads((generate.DASHBOARD_DIR / "weather.json").read_text())


@pytest.fixture
def service_board() -> dict:
    """The committed Service dashboard, freshly parsed (tests may break it)."""
    return json.loads((generate.DASHBOARD_DIR / "service.json").read_text())


@pytest.fixture
def valkey_client(valkey_url: str) -> Iterator[valkey.Valkey]:
    """A client of the session's embedded Valkey, emptied for this test."""
    client = valkey.Valkey.from_url(valkey_url)
    yield client
    client.close()
