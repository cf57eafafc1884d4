"""The HTTP contract against a real `weather-api serve` process and a real Valkey."""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest
import valkey

from tests.conftest import Api, dump
from tests.support import samples

REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")
WEATHERS = ("sunny", "cloudy", "rainy", "foggy")
JSON_HEADERS = {"Content-Type": "application/json"}


def post(api: Api, body: Any, path: str = "/api/weather", **headers: str) -> httpx.Response:  # noqa: ANN401
    """POST a JSON document (or raw bytes) as a client would."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(api.url + path, content=content, headers={**JSON_HEADERS, **headers}, timeout=10)


def test_the_original_example_request_is_accepted(api: Api) -> None:
    """The original system's curl example gets 201, status success and an id."""
    response = post(api, REPORT)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "success"
    assert len(body["id"]) == 36


def test_ids_are_unique_and_time_ordered(api: Api) -> None:
    """Ids are UUIDv7: unique, and sorted by creation time."""
    ids = [post(api, REPORT).json()["id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(i[14] == "7" for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_names_match_case_and_accent_insensitively_and_are_stored_canonically(api: Api, valkey_url: str) -> None:
    """`Amatitlán` and `CHINAUTLA` count for `amatitlan` and `chinautla`."""
    assert post(api, {**REPORT, "municipality": "Amatitlán", "weather": "Sunny"}).status_code == 201
    assert post(api, {**REPORT, "municipality": "CHINAUTLA"}).status_code == 201
    client = valkey.Valkey.from_url(valkey_url)
    assert client.hgetall("weather:counts") == {b"amatitlan": b"1", b"chinautla": b"1"}
    assert httpx.get(api.url + "/api/municipalities/Amatitl%C3%A1n").json()["count"] == 1


def test_batch_is_applied_whole(api: Api) -> None:
    """A batch of valid reports is counted in full, with one id per report."""
    reports = [{**REPORT, "temperature": t} for t in (10, 20, 30)]
    response = post(api, reports, "/api/weather/batch")
    assert response.status_code == 201
    assert response.json()["count"] == 3
    assert len(set(response.json()["ids"])) == 3
    details = httpx.get(api.url + "/api/municipalities/chinautla").json()
    assert details["count"] == 3
    assert details["temperature"] == {"mean": 20.0, "min": 10.0, "max": 30.0}


def test_read_endpoints_before_any_report(api: Api) -> None:
    """Empty aggregates read as zeros and nulls, every weather listed."""
    assert httpx.get(api.url + "/stats").json() == {"total": 0, "municipalities": {}}
    assert httpx.get(api.url + "/averages").json() == {}
    details = httpx.get(api.url + "/api/municipalities/mixco").json()
    assert details["count"] == 0
    assert details["temperature"] == {"mean": None, "min": None, "max": None}
    assert details["weather"] == {"counts": dict.fromkeys(WEATHERS, 0), "most_common": None, "least_common": None}


def test_unknown_municipality_in_path_is_404_problem(api: Api) -> None:
    """Reading an unknown municipality is a 404 with a problem body."""
    response = httpx.get(api.url + "/api/municipalities/atlantis")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "atlantis" in response.json()["detail"]


def test_most_and_least_common_weather(api: Api) -> None:
    """Most common is the highest count; least common may be a weather never reported."""
    for weather, n in (("rainy", 3), ("sunny", 1)):
        for _ in range(n):
            post(api, {**REPORT, "weather": weather})
    weather = httpx.get(api.url + "/api/municipalities/chinautla").json()["weather"]
    assert weather["counts"] == {"sunny": 1, "cloudy": 0, "rainy": 3, "foggy": 0}
    assert weather["most_common"] == "rainy"
    assert weather["least_common"] == "cloudy"  # cloudy and foggy tie at 0: the alphabetically first


def test_health_ready_and_schema(api: Api) -> None:
    """Probes answer; the OpenAPI document lists both POST endpoints (201) and the documented `?points=`."""
    assert httpx.get(api.url + "/health").json() == {"status": "ok"}
    assert httpx.get(api.url + "/ready").json() == {"status": "ready"}
    schema = httpx.get(api.url + "/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert {"/api/weather", "/api/weather/batch", "/stats", "/averages"} <= set(schema["paths"])
    post_op = schema["paths"]["/api/weather"]["post"]
    body = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Report"}
    assert set(schema["components"]["schemas"]["Report"]["required"]) == set(REPORT)
    assert {"201", "400", "413", "415", "422", "503"} <= set(post_op["responses"])
    assert post_op["parameters"][0]["name"] == "Idempotency-Key"
    assert "201" in schema["paths"]["/api/weather/batch"]["post"]["responses"]
    # `?points=`, as docs/architecture.md's endpoint table has it: 1 to 360, default 60.
    parameters = schema["paths"]["/api/municipalities/{municipality}"]["get"]["parameters"]
    (points,) = [p["schema"] for p in parameters if p["name"] == "points"]
    assert (points["minimum"], points["maximum"], points["default"]) == (1, 360, 60)
    assert httpx.get(api.url + "/schema/swagger").status_code == 200


# --- hostile input: a documented 4xx, and Valkey unchanged byte for byte ------------------------

VALID = json.dumps(REPORT).encode()


def _with(field: str, raw: str) -> bytes:
    """The valid report with one field's JSON text replaced by `raw`."""
    parts = [f'"{k}": {raw if k == field else json.dumps(v)}' for k, v in REPORT.items()]
    return ("{" + ", ".join(parts) + "}").encode()


HOSTILE: list[tuple[str, bytes, dict[str, str], str, int]] = [
    # (case, body, headers, path, expected status)
    (
        "invalid utf-8",
        b'{"municipality": "chin\xffautla", "temperature": 1, "humidity": 1, "weather": "sunny"}',
        {},
        "/api/weather",
        400,
    ),
    ("deeply nested arrays", b"[" * 30_000 + b"]" * 30_000, {}, "/api/weather", 400),
    ("deeply nested objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, {}, "/api/weather", 400),
    ("no content type", VALID, {"Content-Type": ""}, "/api/weather", 415),
    ("text/plain", VALID, {"Content-Type": "text/plain"}, "/api/weather", 415),
    ("form content type", VALID, {"Content-Type": "application/x-www-form-urlencoded"}, "/api/weather", 415),
    ("temperature as string", _with("temperature", '"25"'), {}, "/api/weather", 400),
    ("humidity as string", _with("humidity", '"60"'), {}, "/api/weather", 400),
    ("boolean temperature", _with("temperature", "true"), {}, "/api/weather", 400),
    ("null humidity", _with("humidity", "null"), {}, "/api/weather", 400),
    ("NaN", _with("temperature", "NaN"), {}, "/api/weather", 400),
    ("Infinity", _with("temperature", "Infinity"), {}, "/api/weather", 400),
    ("-Infinity", _with("humidity", "-Infinity"), {}, "/api/weather", 400),
    ("1e400", _with("temperature", "1e400"), {}, "/api/weather", 400),
    ("huge integer", _with("humidity", "1" + "0" * 500), {}, "/api/weather", 400),
    ("temperature too high", _with("temperature", "60.0001"), {}, "/api/weather", 400),
    ("temperature too low", _with("temperature", "-91"), {}, "/api/weather", 400),
    ("humidity above 100", _with("humidity", "100.5"), {}, "/api/weather", 400),
    ("negative humidity", _with("humidity", "-1"), {}, "/api/weather", 400),
    ("escaped NUL in name", _with("municipality", '"chinautla\\u0000"'), {}, "/api/weather", 400),
    ("raw control character", _with("municipality", '"chin\x01autla"'), {}, "/api/weather", 400),
    ("unknown municipality", _with("municipality", '"atlantis"'), {}, "/api/weather", 400),
    ("unknown weather", _with("weather", '"snowy"'), {}, "/api/weather", 400),
    ("number as name", _with("municipality", "42"), {}, "/api/weather", 400),
    ("unknown field", VALID[:-1] + b', "wind": 3}', {}, "/api/weather", 400),
    ("duplicate key", VALID[:-1] + b', "temperature": 30}', {}, "/api/weather", 400),
    ("escaped duplicate key", VALID[:-1] + b', "temp\\u0065rature": 30}', {}, "/api/weather", 400),
    ("missing field", b'{"municipality": "chinautla", "temperature": 1, "humidity": 2}', {}, "/api/weather", 400),
    ("empty body", b"", {}, "/api/weather", 400),
    ("trailing garbage", VALID + b"x", {}, "/api/weather", 400),
    ("array for one report", b"[" + VALID + b"]", {}, "/api/weather", 400),
    ("top-level number", b"1", {}, "/api/weather", 400),
    ("body over the limit", b'{"municipality": "' + b"a" * 100_000 + b'"}', {}, "/api/weather", 413),
    ("empty batch", b"[]", {}, "/api/weather/batch", 400),
    ("batch over the maximum", b"[" + b",".join([VALID] * 501) + b"]", {}, "/api/weather/batch", 400),
    ("batch with one bad report", b"[" + VALID + b"," + _with("humidity", "101") + b"]", {}, "/api/weather/batch", 400),
    ("batch duplicate key", b"[" + VALID + b"," + VALID[:-1] + b', "humidity": 5}]', {}, "/api/weather/batch", 400),
    ("object for a batch", VALID, {}, "/api/weather/batch", 400),
    ("idempotency key too long", VALID, {"Idempotency-Key": "k" * 256}, "/api/weather", 400),
    ("empty idempotency key", VALID, {"Idempotency-Key": ""}, "/api/weather", 400),
    ("unprintable idempotency key", VALID, {"Idempotency-Key": "a\tb"}, "/api/weather", 400),
]


@pytest.fixture
def seeded(api: Api, valkey_url: str) -> valkey.Valkey:
    """Some valid data first, so that an unwanted change has something to change."""
    for municipality in MUNICIPALITIES:
        assert post(api, {**REPORT, "municipality": municipality}).status_code == 201
    assert post(api, REPORT, **{"Idempotency-Key": "seed"}).status_code == 201
    return valkey.Valkey.from_url(valkey_url)


def test_hostile_requests_get_their_4xx_and_change_nothing(api: Api, seeded: valkey.Valkey) -> None:
    """Every request of the hostile table gets its documented status, a problem body, no writes."""
    before = dump(seeded)
    assert len(before) > 10
    failures = []
    with httpx.Client(timeout=10) as client:
        for case, body, headers, path, expected in HOSTILE:
            sent_headers = {**JSON_HEADERS, **headers}
            if sent_headers["Content-Type"] == "":
                del sent_headers["Content-Type"]
            response = client.post(api.url + path, content=body, headers=sent_headers)
            problem = response.json() if response.headers.get("content-type") == "application/problem+json" else None
            if response.status_code != expected or problem is None or problem.get("status") != expected:
                failures.append(f"{case}: {response.status_code} {response.text[:200]}")
    assert failures == []
    assert len(HOSTILE) >= 25
    assert dump(seeded) == before


def test_wrong_method_and_unknown_path(api: Api) -> None:
    """405 and 404 come as problem details too: `about:blank`, titled by the status phrase; no refused report counted."""
    for response, status, title in (
        (httpx.get(api.url + "/api/weather"), 405, "Method Not Allowed"),
        (httpx.post(api.url + "/stats", json=REPORT), 405, "Method Not Allowed"),
        (httpx.get(api.url + "/no/such/path"), 404, "Not Found"),
    ):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["status"], problem["type"], problem["title"]) == (status, "about:blank", title)
    assert not any(samples(api, "weather_reports_rejected_total").values())


def test_validation_errors_name_every_bad_field(api: Api) -> None:
    """A report with several problems lists each field with a message."""
    response = post(api, {"municipality": "atlantis", "temperature": 99, "humidity": -5, "weather": "snowy"})
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"$.municipality", "$.temperature", "$.humidity", "$.weather"}


def test_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    """A 100 MB Content-Length gets 413 after a few bytes have been sent."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"{" * 1000,
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


# --- idempotency ------------------------------------------------------------------------------


async def _concurrently(api: Api, n: int, body: Any, headers: dict[str, str]) -> list[httpx.Response]:  # noqa: ANN401
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        return await asyncio.gather(
            *(
                client.post("/api/weather", content=json.dumps(body), headers={**JSON_HEADERS, **headers})
                for _ in range(n)
            ),
        )


def test_one_idempotency_key_sent_ten_times_at_once_is_applied_once(api: Api, valkey_url: str) -> None:
    """Ten concurrent requests with one key: one report counted, ten identical answers."""
    responses = asyncio.run(_concurrently(api, 10, REPORT, {"Idempotency-Key": "once-please"}))
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9
    assert valkey.Valkey.from_url(valkey_url).get("weather:count") == b"1"


def test_same_key_other_body_is_422_and_changes_nothing(api: Api, valkey_url: str) -> None:
    """Reusing a key for another report is refused with 422."""
    assert post(api, REPORT, **{"Idempotency-Key": "k1"}).status_code == 201
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    response = post(api, {**REPORT, "temperature": 26}, **{"Idempotency-Key": "k1"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert dump(client) == before


def test_same_reports_with_other_whitespace_replay(api: Api) -> None:
    """The fingerprint is of the reports, not of the bytes."""
    first = post(api, REPORT, **{"Idempotency-Key": "k2"})
    again = post(api, json.dumps(REPORT, indent=4).encode(), **{"Idempotency-Key": "k2"})
    assert again.status_code == 201
    assert again.json() == first.json()


def test_idempotency_key_expires_after_a_day(api: Api, valkey_url: str) -> None:
    """The first answer is kept for 24 h, then Valkey drops it."""
    post(api, REPORT, **{"Idempotency-Key": "k3"})
    client = valkey.Valkey.from_url(valkey_url)
    (key,) = client.keys("weather:idem:*")
    assert 86_000 < client.ttl(key) <= 86_400


# --- exactness --------------------------------------------------------------------------------


def _reports(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "municipality": rng.choice(MUNICIPALITIES),
            "temperature": round(rng.uniform(-20, 45), rng.choice((0, 1, 2, 6))),
            "humidity": rng.choice((rng.randint(0, 100), round(rng.uniform(0, 100), 3))),
            "weather": rng.choice(WEATHERS),
        }
        for _ in range(n)
    ]


async def _send_all(api: Api, reports: list[dict[str, Any]], clients: int) -> list[int]:
    queue = iter(reports)
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for report in queue:
                response = await client.post("/api/weather", content=json.dumps(report), headers=JSON_HEADERS)
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_twenty_thousand_reports_from_fifty_clients_are_counted_exactly(start_api: Any, valkey_url: str) -> None:  # noqa: ANN401
    """Every aggregate equals what is computed independently from the reports sent."""
    api = start_api(valkey_url, WEATHER_SERIES_INTERVAL="1")
    reports = _reports(20_000, seed=7)
    statuses = asyncio.run(_send_all(api, reports, clients=50))
    assert Counter(statuses) == {201: 20_000}

    by_m: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reports:
        by_m[r["municipality"]].append(r)
    client = valkey.Valkey.from_url(valkey_url, decode_responses=True)
    assert int(client.get("weather:count")) == 20_000
    assert client.zrange("weather:conditions", 0, -1, withscores=True) == sorted(
        ((w, float(c)) for w, c in Counter(r["weather"] for r in reports).items()),
        key=lambda x: (x[1], x[0]),
    )
    for q in ("temperature", "humidity"):
        assert client.zscore("weather:max", q) == max(r[q] for r in reports)
        assert client.zscore("weather:min", q) == min(r[q] for r in reports)
    for m, sent in by_m.items():
        n = len(sent)
        assert int(client.hget("weather:counts", m)) == n
        conditions = Counter(r["weather"] for r in sent)
        assert {w: int(s) for w, s in client.zrange(f"weather:conditions:{m}", 0, -1, withscores=True)} == {
            w: conditions.get(w, 0) for w in WEATHERS
        }
        details = httpx.get(f"{api.url}/api/municipalities/{m}", params={"points": 360}).json()
        assert details["count"] == n
        assert details["weather"]["counts"] == {w: conditions.get(w, 0) for w in WEATHERS}
        for q in ("temperature", "humidity"):
            mean = math.fsum(r[q] for r in sent) / n
            assert _close(float(client.hget(f"weather:avg:{q}", m)), mean)
            assert _close(details[q]["mean"], mean)
            assert details[q]["min"] == min(r[q] for r in sent)
            assert details[q]["max"] == max(r[q] for r in sent)
        # The time series (closed buckets plus the open one) adds up to the same reports.
        series = details["series"]
        assert sum(p["count"] for p in series) == n
        assert _close(
            math.fsum(p["count"] * p["temperature"] for p in series), math.fsum(r["temperature"] for r in sent)
        )
        assert [p["start"] for p in series] == sorted({p["start"] for p in series})
