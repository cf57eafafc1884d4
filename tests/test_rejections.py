"""Every refused report request is counted under its documented reason, and changes nothing.

Against a real `weather-api serve` and Valkey: each kind of bad request is sent, then one scrape
of /metrics must show exactly those counts, under reasons that docs/architecture.md lists.
"""

from __future__ import annotations

import contextlib
import socket

import valkey

from tests.conftest import Api, dump
from tests.support import documented_label_values, report, samples, send

REJECTED = "weather_reports_rejected_total"


def _chunked_post(api: Api, chunks: list[bytes]) -> bytes:
    """POST /api/weather with `Transfer-Encoding: chunked` (no Content-Length); the raw reply."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        try:
            for chunk in chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and close before the whole body is sent
        reply = b""
        # The server closes with part of the body unread, so its kernel may reset the
        # connection after the answer: keep what arrived before the reset.
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                reply += data
    return reply


def test_a_chunked_body_over_the_limit_is_413_and_changes_nothing(api: Api, valkey_url: str) -> None:
    """No Content-Length to refuse early: 128 KiB (the limit is 96) in 8 KiB chunks is refused while streaming."""
    client = valkey.Valkey.from_url(valkey_url)
    assert send(api, report("mixco", 20, 50)).status_code == 201
    before = dump(client)
    reply = _chunked_post(api, [b'{"municipality": "' + b"a" * 8192] + [b"a" * 8192] * 15)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"content-type: application/problem+json" in head.lower()
    assert b'"status":413' in body
    assert dump(client) == before
    # A chunked body under the limit is read whole and accepted.
    small = b'{"municipality": "mixco", "temperature": 1, "humidity": 2, "weather": "rainy"}'
    assert _chunked_post(api, [small[:20], small[20:]]).startswith(b"HTTP/1.1 201")


def test_every_rejection_is_counted_under_its_documented_reason(api: Api, valkey_url: str) -> None:
    """Malformed JSON, a bad report, a bad key, a reused key, wrong type, too large (twice): counted exactly."""
    assert send(api, report("mixco", 20, 50), **{"Idempotency-Key": "k"}).status_code == 201
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    refused = [
        send(api, b'{"municipality": '),  # invalid_json
        send(api, b"\xff\xfe"),  # invalid_json (not UTF-8)
        send(api, report("atlantis", 20, 50)),  # invalid_report
        send(api, report("mixco", "20", 50)),  # invalid_report (a string for a number)
        send(api, report("mixco", 21, 50), **{"Idempotency-Key": "k"}),  # idempotency_conflict
        send(api, report("mixco", 20, 50), **{"Idempotency-Key": "tab\there"}),  # invalid_idempotency_key
        send(api, report("mixco", 20, 50), **{"Content-Type": "text/plain"}),  # unsupported_media_type
        send(api, b"[" + b"1," * 64_000 + b"1]"),  # body_too_large (Content-Length, 125 KiB)
    ]
    assert [r.status_code for r in refused] == [400, 400, 400, 400, 422, 400, 415, 413]
    assert [e["field"] for e in refused[3].json()["errors"]] == ["$.temperature"]
    assert _chunked_post(api, [b"[" + b"1," * 20_000] * 4).startswith(b"HTTP/1.1 413")  # body_too_large (streamed)
    counted = {dict(labels)["reason"]: value for labels, value in samples(api, REJECTED).items()}
    assert counted == {
        "invalid_json": 2,
        "invalid_report": 2,
        "idempotency_conflict": 1,
        "invalid_idempotency_key": 1,
        "unsupported_media_type": 1,
        "body_too_large": 2,
    }
    assert set(counted) <= documented_label_values(REJECTED, "reason")
    assert dump(client) == before
