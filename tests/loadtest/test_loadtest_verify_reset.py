"""verify and reset against the real (embedded) Valkey, without the API: seeded keys, known answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import valkey

from loadtest import reset, verify
from loadtest.ledger import Ledger
from loadtest.reports import WEATHERS, Report

LIBRARY = "#!lua name=testlib\nserver.register_function('noop', function() return 1 end)\n"


def seed(client: valkey.Valkey, cells: dict[tuple[str, str], int], sums: dict[str, tuple[float, float]]) -> None:
    """Write the aggregates the service would hold for these per-weather counts and sums."""
    for m in {m for m, _ in cells}:
        client.sadd("weather:municipalities", m)
        client.zadd(f"weather:conditions:{m}", dict.fromkeys(WEATHERS, 0))
    for (m, w), n in cells.items():
        client.zincrby(f"weather:conditions:{m}", n, w)
        client.zincrby("weather:conditions", n, w)
        client.hincrby("weather:counts", m, n)
        client.incrby("weather:count", n)
    for m, (temperature, humidity) in sums.items():
        client.hincrbyfloat("weather:sum:temperature", m, temperature)
        client.hincrbyfloat("weather:sum:humidity", m, humidity)


def ledger_of(reports: list[Report], path: Path, unknown: list[Report] | None = None) -> Path:
    """Write a ledger that accepted `reports`."""
    ledger = Ledger(meta={"profile": "default", "complete": True})
    ledger.accept(reports)
    ledger.lose_track(unknown or [])
    ledger.finish(len(reports) + len(unknown or []))
    ledger.write(path)
    return path


@pytest.fixture
def client(valkey_url: str) -> valkey.Valkey:
    """A client of the flushed session Valkey."""
    return valkey.Valkey.from_url(valkey_url, decode_responses=True)


REPORTS = [
    Report("mixco", 20.5, 50, "sunny"),
    Report("mixco", 10.0, 30, "sunny"),
    Report("chinautla", 30.1, 90, "rainy"),
]


def seed_extremes(client: valkey.Valkey) -> None:
    """Global extremes of REPORTS, as the service keeps them."""
    client.zadd("weather:max", {"temperature": 30.1, "humidity": 90})
    client.zadd("weather:min", {"temperature": 10.0, "humidity": 30})


def test_verify_passes_when_valkey_holds_exactly_the_ledger(
    client: valkey.Valkey, valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same counts, sums and extremes: exit 0 and 'lost 0, duplicated 0'."""
    seed(client, {("mixco", "sunny"): 2, ("chinautla", "rainy"): 1}, {"mixco": (30.5, 80), "chinautla": (30.1, 90)})
    seed_extremes(client)
    path = ledger_of(REPORTS, tmp_path / "ledger.json")

    assert verify.main(["--ledger", str(path), "--valkey-url", valkey_url], env={}) == 0
    out = capsys.readouterr().out
    assert "lost 0, duplicated 0" in out
    assert "OK" in out


def test_verify_counts_lost_and_duplicated_reports(
    client: valkey.Valkey, valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One mixco/sunny report missing, one chinautla/rainy counted twice: lost 1, duplicated 1, exit 1."""
    seed(client, {("mixco", "sunny"): 1, ("chinautla", "rainy"): 2}, {"mixco": (20.5, 50), "chinautla": (60.2, 180)})
    seed_extremes(client)
    path = ledger_of(REPORTS, tmp_path / "ledger.json")

    assert verify.main(["--ledger", str(path), "--valkey-url", valkey_url], env={}) == 1
    out = capsys.readouterr().out
    assert "lost 1, duplicated 1" in out
    assert "mixco/sunny: accepted 2, in Valkey 1" in out
    assert "chinautla/rainy: accepted 1, in Valkey 2" in out


def test_verify_catches_aggregates_that_disagree_with_each_other(
    client: valkey.Valkey, valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right per-weather counts but a wrong weather:counts entry and sum still fail."""
    seed(client, {("mixco", "sunny"): 2, ("chinautla", "rainy"): 1}, {"mixco": (30.5, 80), "chinautla": (30.1, 90)})
    seed_extremes(client)
    client.hincrby("weather:counts", "mixco", 1)
    client.hincrbyfloat("weather:sum:temperature", "chinautla", 1.0)
    path = ledger_of(REPORTS, tmp_path / "ledger.json")

    assert verify.main(["--ledger", str(path), "--valkey-url", valkey_url], env={}) == 1
    out = capsys.readouterr().out
    assert "lost 0, duplicated 0" in out
    assert "mixco: weather:counts says 3, its conditions zset 2" in out
    assert "chinautla: sum of temperature" in out


def test_verify_is_inconclusive_with_reports_of_unknown_fate(
    client: valkey.Valkey, valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report whose request timed out may or may not be stored: not a duplicate, but no pass either."""
    seed(client, {("mixco", "sunny"): 3, ("chinautla", "rainy"): 1}, {})
    path = ledger_of(REPORTS, tmp_path / "ledger.json", unknown=[Report("mixco", 1.0, 20, "sunny")])

    assert verify.main(["--ledger", str(path), "--valkey-url", valkey_url], env={}) == 1
    out = capsys.readouterr().out
    assert "lost 0, duplicated 0" in out
    assert "INCONCLUSIVE: 1 reports of unknown fate" in out


def test_verify_reads_the_newest_run_and_the_url_file(
    client: valkey.Valkey, valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without options: the newest results folder, and the URL the service wrote into its data dir."""
    seed(client, {("mixco", "sunny"): 2, ("chinautla", "rainy"): 1}, {"mixco": (30.5, 80), "chinautla": (30.1, 90)})
    seed_extremes(client)
    results = tmp_path / "results"
    ledger_of(REPORTS[:1], results / "20260101T000000Z" / "ledger.json")
    ledger_of(REPORTS, results / "20260101T000001Z" / "ledger.json")
    data = tmp_path / "data"
    data.mkdir()
    (data / "valkey.url").write_text(valkey_url + "\n")

    assert verify.main(["--results", str(results)], env={"WEATHER_DATA_DIR": str(data)}) == 0
    assert "20260101T000001Z" in capsys.readouterr().out


def test_verify_without_a_valkey_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No URL anywhere: exit 2 and name the ways to give one."""
    path = ledger_of(REPORTS, tmp_path / "ledger.json")
    assert verify.main(["--ledger", str(path)], env={"WEATHER_DATA_DIR": str(tmp_path / "none")}) == 2
    assert "--valkey-url" in capsys.readouterr().err


def test_reset_refuses_without_yes(client: valkey.Valkey, valkey_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --yes nothing is deleted; the count of what would be is shown."""
    client.set("weather:count", 5)
    assert reset.main(["--valkey-url", valkey_url], env={}) == 2
    assert client.get("weather:count") == "5"
    assert "would delete 1 keys" in capsys.readouterr().err


def test_reset_deletes_weather_keys_only_and_keeps_functions(client: valkey.Valkey, valkey_url: str) -> None:
    """Every weather:* key goes (in batches); other keys and the function library stay."""
    client.function_load(LIBRARY)
    client.mset({f"weather:idem:{i}": "x" for i in range(1200)})
    client.hset("weather:counts", "mixco", 3)
    client.set("other:key", "kept")

    assert reset.main(["--valkey-url", valkey_url, "--yes"], env={}) == 0
    assert list(client.scan_iter(match="weather:*")) == []
    assert client.get("other:key") == "kept"
    assert client.fcall("noop", 0) == 1


def test_reset_matches_a_hash_tagged_prefix_literally(client: valkey.Valkey, valkey_url: str) -> None:
    """A `{weather}` prefix is not a pattern; `[w]eather`-like neighbours are not touched."""
    client.set("{weather}:count", 1)
    client.set("weather:count", 1)
    assert reset.main(["--valkey-url", valkey_url, "--yes", "--prefix", "{weather}"], env={}) == 0
    assert client.get("{weather}:count") is None
    assert client.get("weather:count") == "1"
