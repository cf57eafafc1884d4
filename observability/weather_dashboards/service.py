"""The Service dashboard: weather-api, Valkey and Locust as Prometheus sees them.

design.md section 5: request rate, error ratio, latency percentiles and a heatmap with exemplars
(trace ids, linked to Tempo through the Prometheus data source), in-flight requests, Valkey call
latency and errors, Valkey server health (redis_exporter), Locust load, SLO burn rates.

Every query returns at least one series on a healthy, loaded system: error-type queries end in
``or on() vector(0)`` so that "no errors" draws a zero line instead of "No data", and the
end-to-end test holds each query to that.
"""

# The SDK's builder methods take their booleans positionally (`.multi(False)`).
# ruff: noqa: FBT003

from __future__ import annotations

from grafana_foundation_sdk.builders import common, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from weather_dashboards.layout import PROMETHEUS, TAG, dashboard_links, place, row

UID = "weather-api-service"
DEFAULT_ROUTE = "/api/weather"

API = 'job="weather-api"'
ROUTE = f'{API}, route="$route"'
SLO = 'route="/api/weather", method="POST"'
RATE = "[$__rate_interval]"
NO_ERRORS = " or on() vector(0)"
REQUESTS = "http_server_request_duration_seconds"

# Burn-rate windows shown on the SLO panels, paired as the alerts pair them.
WINDOWS = ("5m", "30m", "1h", "6h")

Panel = cogbuilder.Builder[dashboard.Panel] | cogbuilder.Builder[dashboard.RowPanel]


def _q(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).range()


def _ts(title: str, description: str, unit: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
    )
    for target in targets:
        panel.with_target(target)
    return panel


def _stat(title: str, description: str, unit: str, target: prometheus.Dataquery) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(target)
        .unit(unit)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .color_mode(common_models.BigValueColorMode.VALUE)
    )


def _informational(panel: stat.Panel) -> stat.Panel:
    """One fixed colour: a count whose good or bad depends on context, so no threshold applies."""
    return panel.color_scheme(builders.FieldColor().mode(dashboard.FieldColorModeId.FIXED).fixed_color("blue"))


def _objective(panel: stat.Panel, objective: float, below: str = "red") -> stat.Panel:
    """Coloured against an objective: ``below`` under it, green from it on."""
    steps = [dashboard.Threshold(value=None, color=below), dashboard.Threshold(value=objective, color="green")]
    return panel.color_scheme(builders.FieldColor().mode(dashboard.FieldColorModeId.THRESHOLDS)).thresholds(
        builders.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(steps)
    )


def _quantiles(metric: str, selector: str, by: str = "") -> list[prometheus.Dataquery]:
    """p50, p90 and p99 of a histogram, optionally split by a label."""
    legend_suffix = f" {{{{{by}}}}}" if by else ""
    by_labels = f"le, {by}" if by else "le"
    return [
        _q(
            f"histogram_quantile({q}, sum by ({by_labels}) (rate({metric}_bucket{{{selector}}}{RATE})))",
            f"p{round(q * 100)}{legend_suffix}",
            ref_id,
        )
        for q, ref_id in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]


def _heatmap() -> heatmap.Panel:
    return (
        heatmap.Panel()
        .title("Latency heatmap: $route")
        .description(
            f"Buckets of {REQUESTS} per second. Exemplars (dots) carry the trace id: "
            "hover one and follow the link to Tempo."
        )
        .datasource(PROMETHEUS)
        .with_target(
            _q(f"sum by (le) (rate({REQUESTS}_bucket{{{ROUTE}}}{RATE}))", "{{le}}")
            .format(prometheus_models.PromQueryFormat.HEATMAP)
            .exemplar(True)
        )
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s").decimals(3))
        .cell_values(heatmap.CellValues().unit("reqps"))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .exemplars_color("rgba(255,0,255,0.7)")
        .show_legend()
    )


def _requests_section(y: int) -> list[Panel]:
    count = f"{REQUESTS}_count"
    errors = f'(sum(rate({count}{{{API}, status_code=~"5.."}}{RATE})){NO_ERRORS}) / sum(rate({count}{{{API}}}{RATE}))'
    latency = _quantiles(REQUESTS, ROUTE)
    latency[2].exemplar(True)
    return [
        row("Requests", 100, y),
        place(
            _ts(
                "Request rate",
                "Requests per second by route and method, all status codes.",
                "reqps",
                _q(f"sum by (route, method) (rate({count}{{{API}}}{RATE}))", "{{method}} {{route}}"),
            ),
            101,
            0,
            y + 1,
            8,
            8,
        ),
        place(
            _ts(
                "Error ratio (5xx)",
                "Share of all requests answered with 5xx; 0 when there are none.",
                "percentunit",
                _q(errors, "5xx ratio"),
                _q(
                    f'sum by (status_code) (rate({count}{{{API}, status_code=~"4.."}}{RATE})){NO_ERRORS}',
                    "{{status_code}} per second",
                    "B",
                ),
            ).override_by_regexp(
                ".*per second",
                [
                    dashboard.DynamicConfigValue(id_val="unit", value="reqps"),
                    dashboard.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                ],
            ),
            102,
            8,
            y + 1,
            8,
            8,
        ),
        place(
            _ts(
                "In-flight requests",
                "http_server_requests_in_flight: requests being served right now.",
                "short",
                _q(f"sum by (instance) (http_server_requests_in_flight{{{API}}})", "{{instance}}"),
            ),
            103,
            16,
            y + 1,
            8,
            8,
        ),
        place(
            _ts(
                "Latency percentiles: $route",
                "p50 / p90 / p99 from the histogram; p99 shows exemplars.",
                "s",
                *latency,
            ),
            104,
            0,
            y + 9,
            12,
            8,
        ),
        place(_heatmap(), 105, 12, y + 9, 12, 8),
        place(
            _ts(
                "Reports accepted per municipality",
                "weather_reports_accepted_total per second.",
                "reqps",
                _q(
                    f"sum by (municipality) (rate(weather_reports_accepted_total{{{API}}}{RATE}))",
                    "{{municipality}}",
                ),
            ),
            106,
            0,
            y + 17,
            12,
            7,
        ),
        place(
            _ts(
                "Reports rejected by reason",
                "weather_reports_rejected_total per second; 0 when nothing is rejected.",
                "reqps",
                _q(
                    f"sum by (reason) (rate(weather_reports_rejected_total{{{API}}}{RATE})){NO_ERRORS}",
                    "{{reason}}",
                ),
            ),
            107,
            12,
            y + 17,
            12,
            7,
        ),
    ]


def _valkey_section(y: int) -> list[Panel]:
    valkey = "weather_valkey_command_duration_seconds"
    return [
        row("Valkey", 200, y),
        place(
            _ts(
                "Valkey call latency (p50, p99) by operation",
                f"{valkey}: as the API measures it, round trip included.",
                "s",
                _q(
                    f"histogram_quantile(0.99, sum by (le, operation) (rate({valkey}_bucket{{{API}}}{RATE})))",
                    "p99 {{operation}}",
                ),
                _q(
                    f"histogram_quantile(0.5, sum by (le, operation) (rate({valkey}_bucket{{{API}}}{RATE})))",
                    "p50 {{operation}}",
                    "B",
                ),
            ),
            201,
            0,
            y + 1,
            8,
            8,
        ),
        place(
            _ts(
                "Valkey calls and errors",
                "Calls per second by operation, and errors by operation and kind; 0 when none.",
                "reqps",
                _q(f"sum by (operation) (rate({valkey}_count{{{API}}}{RATE}))", "{{operation}}"),
                _q(
                    f"sum by (operation, error) (rate(weather_valkey_errors_total{{{API}}}{RATE})){NO_ERRORS}",
                    "errors {{operation}} {{error}}",
                    "B",
                ),
            ),
            202,
            8,
            y + 1,
            8,
            8,
        ),
        place(
            _objective(
                _stat(
                    "Valkey up",
                    "redis_up from redis_exporter: 1 (green) when every Valkey answers, 0 (red) otherwise.",
                    "bool_yes_no",
                    _q('min(redis_up{job="valkey"})', "up").instant(),
                ),
                1,
            ),
            203,
            16,
            y + 1,
            4,
            4,
        ),
        place(
            _informational(
                _stat(
                    "Connected clients",
                    "redis_connected_clients, all nodes.",
                    "short",
                    _q('sum(redis_connected_clients{job="valkey"})', "clients"),
                )
            ),
            204,
            20,
            y + 1,
            4,
            4,
        ),
        place(
            _informational(
                _stat(
                    "Memory used",
                    "redis_memory_used_bytes, all nodes; against maxmemory in the panel below.",
                    "bytes",
                    _q('sum(redis_memory_used_bytes{job="valkey"})', "memory"),
                )
            ),
            205,
            16,
            y + 5,
            4,
            4,
        ),
        place(
            _informational(
                _stat(
                    "Commands per second",
                    "rate of redis_commands_processed_total, all clients.",
                    "ops",
                    _q(f'sum(rate(redis_commands_processed_total{{job="valkey"}}{RATE}))', "commands/s"),
                )
            ),
            206,
            20,
            y + 5,
            4,
            4,
        ),
        place(_memory_and_evictions(), 207, 0, y + 9, 24, 7),
    ]


def _memory_and_evictions() -> timeseries.Panel:
    valkey = 'job="valkey"'
    return _ts(
        "Valkey memory and evictions",
        "Memory used against maxmemory (0: no limit) per node, and keys evicted per second "
        "(redis_evicted_keys_total). Valkey runs volatile-ttl: it may evict idempotency records "
        "(they have a TTL), never aggregates; a late retry of an evicted key counts twice.",
        "bytes",
        _q(f"max by (instance) (redis_memory_used_bytes{{{valkey}}})", "used {{instance}}"),
        _q(f"max by (instance) (redis_memory_max_bytes{{{valkey}}})", "maxmemory {{instance}}", "B"),
        _q(f"sum(rate(redis_evicted_keys_total{{{valkey}}}{RATE}))", "evicted keys/s", "C"),
    ).override_by_name(
        "evicted keys/s",
        [
            dashboard.DynamicConfigValue(id_val="unit", value="suffix: keys/s"),
            dashboard.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        ],
    )


def _locust_section(y: int) -> list[Panel]:
    locust = 'job="locust"'
    return [
        row("Load (Locust)", 300, y),
        place(
            _ts(
                "Users",
                "locust_users: simulated users running.",
                "short",
                _q(f"sum(locust_users{{{locust}}})", "users"),
            ),
            301,
            0,
            y + 1,
            6,
            8,
        ),
        place(
            _ts(
                "Request rate",
                "locust_requests_total per second by request name.",
                "reqps",
                _q(f"sum by (method, name) (rate(locust_requests_total{{{locust}}}{RATE}))", "{{method}} {{name}}"),
            ),
            302,
            6,
            y + 1,
            6,
            8,
        ),
        place(
            _ts(
                "Failures",
                "locust_failures_total per second by request name; 0 when none.",
                "reqps",
                _q(
                    f"sum by (method, name) (rate(locust_failures_total{{{locust}}}{RATE})){NO_ERRORS}",
                    "{{method}} {{name}}",
                ),
            ),
            303,
            12,
            y + 1,
            6,
            8,
        ),
        place(
            _ts(
                "Response time",
                "locust_response_time_seconds percentiles, as the load generator sees them.",
                "s",
                *_quantiles("locust_response_time_seconds", locust),
            ),
            304,
            18,
            y + 1,
            6,
            8,
        ),
    ]


def _burn_rate(sli: str, budget: float) -> list[prometheus.Dataquery]:
    return [
        _q(
            f"route_method:http_server_request_{sli}:ratio_rate{window}{{{SLO}}} / {budget}",
            window,
            chr(ord("A") + i),
        )
        for i, window in enumerate(WINDOWS)
    ]


def _burn_thresholds() -> builders.ThresholdsConfig:
    # The page thresholds of the alerts: 6x (6h/30m) and 14.4x (1h/5m).
    return (
        builders.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dashboard.Threshold(value=None, color="green"),
                dashboard.Threshold(value=6, color="orange"),
                dashboard.Threshold(value=14.4, color="red"),
            ]
        )
    )


def _slo_section(y: int) -> list[Panel]:
    dashed = common.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.DASHED)
    return [
        row("SLO: POST /api/weather", 400, y),
        place(
            _ts(
                "Availability burn rate (SLO 99.9%)",
                "5xx ratio divided by the 0.1% budget, per window. 1 spends the 30-day budget in "
                "exactly 30 days; the alert pages above 14.4 (1h and 5m) or 6 (6h and 30m).",
                "x",
                *_burn_rate("errors", 0.001),
            )
            .thresholds(_burn_thresholds())
            .thresholds_style(dashed),
            401,
            0,
            y + 1,
            9,
            8,
        ),
        place(
            _ts(
                "Latency burn rate (SLO p99 < 100 ms)",
                "Share of requests slower than 100 ms divided by the 1% budget, per window.",
                "x",
                *_burn_rate("slow", 0.01),
            )
            .thresholds(_burn_thresholds())
            .thresholds_style(dashed),
            402,
            9,
            y + 1,
            9,
            8,
        ),
        place(
            _objective(
                _stat(
                    "Availability, last 24h",
                    "1 - 5xx ratio of POST /api/weather over one day: green from the 99.9% objective.",
                    "percentunit",
                    _q(f"1 - route_method:http_server_request_errors:ratio_rate1d{{{SLO}}}", "availability"),
                ).decimals(3),
                0.999,
            ),
            403,
            18,
            y + 1,
            6,
            4,
        ),
        place(
            _objective(
                _stat(
                    "Requests under 100 ms, last 24h",
                    "1 - share of POST /api/weather requests slower than 100 ms: green from the 99% objective.",
                    "percentunit",
                    _q(f"1 - route_method:http_server_request_slow:ratio_rate1d{{{SLO}}}", "under 100 ms"),
                ).decimals(3),
                0.99,
            ),
            404,
            18,
            y + 5,
            6,
            4,
        ),
    ]


def _route_variable() -> builders.QueryVariable:
    current = dashboard.VariableOption(selected=True, text=DEFAULT_ROUTE, value=DEFAULT_ROUTE)
    return (
        builders.QueryVariable("route")
        .label("Route")
        .description("Route template for the latency panels.")
        .datasource(PROMETHEUS)
        .query(f"label_values({REQUESTS}_count{{{API}}}, route)")
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .current(current)
        .multi(False)
        .include_all(False)
    )


def build() -> dashboard.Dashboard:
    """Build the Service dashboard."""
    board = (
        builders.Dashboard("weather-api service")
        .uid(UID)
        .description("weather-api, Valkey and Locust from Prometheus; exemplars link to traces in Tempo.")
        .tags([TAG, "prometheus"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .readonly()
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .links(dashboard_links())
        .with_variable(_route_variable())
    )
    sections = _requests_section(0) + _valkey_section(25) + _locust_section(41) + _slo_section(50)
    for panel in sections:
        if isinstance(panel, builders.Row):
            board.with_row(panel)
        else:
            board.with_panel(panel)  # type: ignore[arg-type]  # not a row, so a panel builder
    return board.build()
