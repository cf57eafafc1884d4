"""Locust metrics for Prometheus, named as docs/architecture.md says.

Each process exports what it does itself, so that summing over the `locust` job counts
everything once: a standalone run exports requests and users; in a distributed run the
workers export their requests (they make them) and the master exports the user count (it
knows the total).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds; dense where a healthy service answers (1-250 ms), sparse up to the client timeout.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class LocustMetrics:
    """The Locust metrics in one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "locust_requests",
            "Requests made by Locust, by method and request name.",
            ["method", "name"],
            registry=self.registry,
        )
        self.failures = Counter(
            "locust_failures",
            "Requests that Locust counted as failed, by method and request name.",
            ["method", "name"],
            registry=self.registry,
        )
        self.response_time = Histogram(
            "locust_response_time_seconds",
            "Response time of Locust's requests, failed ones included.",
            ["method", "name"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.users: Gauge | None = None
        self._servers: list[Any] = []

    def count_users(self, source: Callable[[], float]) -> None:
        """Export `locust_users`, read from `source()` at every scrape (not on workers)."""
        self.users = Gauge("locust_users", "Locust users running.", registry=self.registry)
        self.users.set_function(source)

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        exception: BaseException | None = None,
        **_: Any,  # noqa: ANN401 - Locust's request event carries more than we use
    ) -> None:
        """Listener for Locust's `request` event (response_time in milliseconds)."""
        self.requests.labels(request_type, name).inc()
        failures = self.failures.labels(request_type, name)  # exported at 0 until the first failure
        if exception is not None:
            failures.inc()
        self.response_time.labels(request_type, name).observe(response_time / 1000.0)

    def serve(self, port: int, addr: str = "0.0.0.0", attempts: int = 1) -> int:  # noqa: S104 - scraped from outside
        """Serve /metrics on `port`, or the next free one of `attempts` ports; returns the port."""
        for candidate in range(port, port + attempts):
            try:
                server, _thread = start_http_server(candidate, addr=addr, registry=self.registry)
            except OSError:
                continue
            self._servers.append(server)
            return candidate
        msg = f"port {port} is in use" if attempts == 1 else f"ports {port}..{port + attempts - 1} are all in use"
        raise OSError(msg)

    def close(self) -> None:
        """Stop serving (the process ending does the same)."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
