"""docs/architecture.md's configuration and CLI, held to the code (the docs are the oracle here).

A documented setting that the service ignores, a setting it reads that the docs never mention,
or a documented `serve` option that `serve` refuses (as `--workers 1` once was) fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ARCHITECTURE
from weather_api.settings import Settings

SOURCES = Path(__file__).resolve().parents[1] / "src" / "weather_api"

SAMPLES = {
    # a documented variable -> a valid value other than its default
    "WEATHER_VALKEY_URL": "redis://127.0.0.1:1/0",
    "WEATHER_DATA_DIR": "/tmp/elsewhere",  # noqa: S108 - only parsed, never created
    "WEATHER_KEY_PREFIX": "{weather}",
    "WEATHER_MUNICIPALITIES": "peten",
    "WEATHER_VALKEY_TIMEOUT": "2.5",
    "WEATHER_VALKEY_MAX_CONNECTIONS": "3",
    "WEATHER_MAX_BODY_BYTES": "1024",
    "WEATHER_MAX_BATCH": "7",
    "WEATHER_MAX_CONCURRENCY": "9",
    "WEATHER_SHUTDOWN_TIMEOUT": "4",
    "WEATHER_SERIES_INTERVAL": "60",
    "WEATHER_SERIES_MAXLEN": "10",
    "WEATHER_RECENT_MAXLEN": "20",
    "WEATHER_TELEMETRY": "off",
    "WEATHER_ACCESS_LOG": "off",
    "WEATHER_LOG_LEVEL": "debug",
}


def documented_variables() -> set[str]:
    """The WEATHER_* variables of the configuration table."""
    table = ARCHITECTURE.read_text().split("## Configuration", 1)[1].split("\n\n", 2)[1]
    return {name for row in table.splitlines() for name in re.findall(r"`(WEATHER_[A-Z_]+)`", row.split("|")[1])}


def test_every_documented_setting_is_read_and_every_one_read_is_documented() -> None:
    """The table and the code name the same WEATHER_* variables."""
    read = {name for path in SOURCES.glob("*.py") for name in re.findall(r"\bWEATHER_[A-Z_]+\b", path.read_text())}
    assert documented_variables() == read


@pytest.mark.parametrize("variable", sorted(SAMPLES))
def test_each_documented_setting_changes_the_settings(variable: str) -> None:
    """Setting the variable to a valid non-default value changes what Settings.from_env builds."""
    assert variable in documented_variables()
    assert Settings.from_env({variable: SAMPLES[variable]}) != Settings()


def test_the_documented_serve_options_are_the_ones_serve_accepts() -> None:
    """The CLI line's options are exactly those `weather-api serve --help` lists."""
    line = next(row for row in ARCHITECTURE.read_text().splitlines() if row.startswith("CLI: `weather-api serve"))
    documented = set(re.findall(r"\[(--[a-z-]+)", line.split("`")[1]))
    shown = subprocess.run(
        [sys.executable, "-m", "weather_api", "serve", "--help"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    accepted = set(re.findall(r"^\s+(--[a-z-]+)", shown, re.MULTILINE)) - {"--help"}
    assert "--port" in accepted
    assert documented == accepted
