"""The pure parts of the load test: reports, ledger, budget, thresholds, metrics."""

from __future__ import annotations

import math
import random
import socket
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from loadtest.budget import DONE, GRANT, REQUEST, LocalBudget, Pool, WorkerBudget
from loadtest.exporter import LocustMetrics
from loadtest.ledger import Ledger
from loadtest.reports import MUNICIPALITIES, WEATHERS, Report, ReportFactory, invalid_cases
from loadtest.thresholds import Observed, Thresholds, broken
from tests.conftest import free_port


def test_factory_gives_the_favourite_its_share_and_plausible_values() -> None:
    """70% for the favourite, the rest spread; values within the original ranges."""
    factory = ReportFactory(MUNICIPALITIES, "chinautla", 0.7, random.Random(5))
    reports = factory.batch(10_000)
    counts = Counter(r.municipality for r in reports)
    assert 6800 < counts["chinautla"] < 7200
    assert all(800 < counts[m] < 1200 for m in ("mixco", "guatemala", "amatitlan"))
    assert all(5 <= r.temperature <= 35 and round(r.temperature, 1) == r.temperature for r in reports)
    assert all(20 <= r.humidity <= 100 and r.weather in {"sunny", "cloudy", "rainy", "foggy"} for r in reports)
    assert set(WEATHERS) == {"sunny", "cloudy", "rainy", "foggy"}


def test_factory_refuses_an_unknown_favourite() -> None:
    """A typo in --municipality fails at once rather than sending 70% of 400s."""
    with pytest.raises(ValueError, match="atlantis"):
        ReportFactory(MUNICIPALITIES, "atlantis")


def test_every_invalid_case_expects_a_4xx() -> None:
    """Invalid requests are only ever judged by client-error statuses."""
    cases = invalid_cases(Report("mixco", 20.0, 50, "sunny"))
    assert len({c.name for c in cases}) == len(cases)
    assert all(c.expected and all(400 <= s < 500 for s in c.expected) for c in cases)


def test_ledger_pieces_merge_into_the_whole() -> None:
    """Worker pieces sent through JSON add up to the counts, sums and extremes of the reports themselves."""
    reports = ReportFactory(MUNICIPALITIES, "mixco", rng=random.Random(1)).batch(50)
    worker, master = Ledger(), Ledger()
    for part in (reports[:20], reports[20:]):
        worker.accept(part)
        worker.finish(len(part))
        master.merge(Ledger.from_dict(worker.take().to_dict()))
    assert worker.is_empty()
    cells = Counter((r.municipality, r.weather) for r in reports)
    assert {(m, w): n for m, row in master.accepted.items() for w, n in row.items()} == cells
    assert master.requests == master.total_accepted == 50
    for m in {r.municipality for r in reports}:
        mine = [r for r in reports if r.municipality == m]
        assert master.temperature[m].max == max(r.temperature for r in mine)
        assert master.temperature[m].min == min(r.temperature for r in mine)
        assert math.isclose(master.humidity[m].sum, sum(r.humidity for r in mine))


def test_pool_hands_out_exactly_the_limit_and_drains_once() -> None:
    """However tickets are asked for, no more than the limit go out; drained fires once, at the last return."""
    drained: list[int] = []
    pool = Pool(limit=25, deadline=None, on_drained=lambda: drained.append(pool.done))
    assert [pool.grant(10), pool.grant(10), pool.grant(10), pool.grant(10)] == [10, 10, 5, 0]
    pool.complete(24)
    assert drained == []
    pool.complete(1)
    assert drained == [25]
    pool.close()
    assert drained == [25]
    assert not pool.interrupted


def test_pool_stops_granting_at_the_deadline() -> None:
    """A duration run: tickets until the deadline, then none; an early close marks an interruption."""
    now = [0.0]
    pool = Pool(limit=None, deadline=10.0, on_drained=lambda: None, clock=lambda: now[0])
    assert LocalBudget(pool).take()
    now[0] = 10.0
    assert not LocalBudget(pool).take()
    assert not pool.interrupted
    early = Pool(limit=100, deadline=None, on_drained=lambda: None)
    early.close()
    assert early.interrupted
    assert early.grant(1) == 0


def test_worker_budget_fetches_blocks_and_returns_them_with_the_ledger() -> None:
    """A worker asks the master for blocks and reports finished tickets with their ledger piece."""
    ledger = Ledger()
    pool = Pool(limit=7, deadline=None, on_drained=lambda: None)
    master = Ledger()
    sent: list[tuple[str, dict[str, Any]]] = []

    def send(kind: str, data: dict[str, Any]) -> None:
        sent.append((kind, data))
        if kind == REQUEST:
            budget.on_grant(pool.grant(data["want"]))
        elif kind == DONE:
            master.merge(Ledger.from_dict(data["ledger"]))
            pool.complete(data["done"])

    budget = WorkerBudget(send, ledger, block=5)
    taken = 0
    while budget.take():
        ledger.accept([Report("mixco", 20.0, 50, "sunny")])
        ledger.finish()
        budget.finish()
        taken += 1
    assert taken == 7
    assert pool.drained
    assert master.requests == 7
    assert master.accepted == {"mixco": {"sunny": 7}}
    assert [kind for kind, _ in sent].count(REQUEST) == 3
    assert GRANT not in [kind for kind, _ in sent]


def test_thresholds_name_what_broke() -> None:
    """Each broken limit gives one message with its value, its limit and its option; -1 turns a limit off."""
    seen = Observed(requests=200, failures=4, p50_ms=5, p95_ms=120, p99_ms=300, max_ms=900, seconds=2)
    messages = broken(Thresholds(max_failure_ratio=0.01, max_p95_ms=100, max_p99_ms=250), seen)
    assert messages == [
        "failure ratio 2.00% (4 of 200) > limit 1.00% (--max-failure-ratio 0.01)",
        "p95 response time 120 ms > limit 100 ms (--max-p95-ms 100)",
        "p99 response time 300 ms > limit 250 ms (--max-p99-ms 250)",
    ]
    assert broken(Thresholds(-1, -1, -1), seen) == []
    assert broken(Thresholds(), Observed(0, 0, 0, 0, 0, 0, 1)) != []


def free_ports() -> int:
    """A port p with p and p + 1 free on loopback, below the ephemeral range (tests.conftest.free_port).

    Both are bound to check: a port in the ephemeral range could be taken by the local end of
    any outgoing connection in between (it was, once, under a busy CI run).
    """
    for _ in range(20):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    pytest.fail("no two adjacent free ports")


def test_metrics_follow_the_contract_and_skip_a_busy_port() -> None:
    """locust_requests_total, locust_failures_total, the histogram and locust_users, served on the next free port."""
    metrics = LocustMetrics(CollectorRegistry())
    metrics.on_request("POST", "/api/weather", 12.0, exception=None)
    metrics.on_request("POST", "/api/weather", 2500.0, exception=RuntimeError("503"))
    metrics.count_users(lambda: 10.0)
    text = generate_latest(metrics.registry).decode()
    assert 'locust_requests_total{method="POST",name="/api/weather"} 2.0' in text
    assert 'locust_failures_total{method="POST",name="/api/weather"} 1.0' in text
    assert 'locust_response_time_seconds_bucket{le="0.025",method="POST",name="/api/weather"} 1.0' in text
    assert 'locust_response_time_seconds_count{method="POST",name="/api/weather"} 2.0' in text
    assert "locust_users 10.0" in text

    port = free_ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        served = metrics.serve(port, "127.0.0.1", attempts=2)
    try:
        assert served == port + 1
        scraped = httpx.get(f"http://127.0.0.1:{served}/metrics", timeout=5).text
        assert "locust_requests_total" in scraped
    finally:
        metrics.close()
