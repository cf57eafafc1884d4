"""The Weather dashboard: the aggregates in Valkey, laid out as the original assignment's sketch.

design.md section 5 and shared/dashboard-layout.png. Every panel is one query of the Redis data
source plugin against the key layout of docs/architecture.md:

    row 1  pie: avg humidity per municipality | highest temperature | highest humidity
                                              | lowest temperature  | lowest humidity
    row 2  pie: avg temperature               | bar chart: reports per weather condition
    ---- municipality section ($municipality, default chinautla) ----
           identifier (CARNET)   | most common weather | least common weather
           municipality name     | time series: temperature and humidity
"""

# The SDK's builder methods take their booleans positionally (`.multi(False)`).
# ruff: noqa: FBT003

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, common, piechart, stat, text, timeseries
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard
from grafana_foundation_sdk.models import piechart as piechart_models
from grafana_foundation_sdk.models import text as text_models

from weather_dashboards.layout import TAG, VALKEY_UID, dashboard_links, place, row
from weather_dashboards.redis_plugin import Redis, datasource_ref

UID = "weather"
VALKEY = datasource_ref(VALKEY_UID)
DEFAULT_MUNICIPALITY = "chinautla"
DEFAULT_IDENTIFIER = "CARNET"
# Key prefix (WEATHER_KEY_PREFIX); a dashboard constant so a deployment that hash-tags its keys
# ("{weather}") changes one value. The plugin interpolates variables in keyName.
PREFIX = "${prefix}"
# Longest label the bar chart's x axis shows uncut; Grafana appends "..." beyond it (0 would
# leave only "..."). The weather names are at most 6 characters; the panel test checks the
# labels Valkey returns fit.
X_LABEL_MAX = 16


def _single_value(fields: str = "") -> common.ReduceDataOptions:
    # Each frame of these queries has one row per field: take it as it is.
    return common.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(fields)


def _pie(title: str, key: str, unit: str) -> piechart.Panel:
    return (
        piechart.Panel()
        .title(title)
        .description(f"`HGETALL {key}`: one field per municipality holding its running mean.")
        .datasource(VALKEY)
        .with_target(Redis("hgetall", key))
        .pie_type(piechart_models.PieChartType.PIE)
        .reduce_options(_single_value())
        .display_labels([piechart_models.PieChartLabels.NAME, piechart_models.PieChartLabels.VALUE])
        .legend(
            piechart.PieChartLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.RIGHT)
            .values([piechart_models.PieChartLegendValues.VALUE])
        )
        .unit(unit)
        .decimals(1)
    )


def _extreme(title: str, key: str, member: str, unit: str, color: str) -> stat.Panel:
    # ZRANGE key 0 -1 WITHSCORES returns one field per member (temperature, humidity); the
    # panel shows the one named `member`. "/^name$/" is what Grafana's field picker stores.
    return (
        stat.Panel()
        .title(title)
        .description(f"`ZRANGE {key} 0 -1 WITHSCORES`, member `{member}`.")
        .datasource(VALKEY)
        .with_target(Redis("zrange", key).index_range(0, -1))
        .reduce_options(_single_value(f"/^{member}$/"))
        .text_mode(common_models.BigValueTextMode.VALUE)
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .color_scheme(builders.FieldColor().mode(dashboard.FieldColorModeId.FIXED).fixed_color(color))
        .unit(unit)
        .decimals(1)
    )


def _commonest(title: str, start: int, description: str) -> stat.Panel:
    # ZRANGE sorts by count, then by name: index -1 is the most reported weather, 0 the least.
    key = f"{PREFIX}:conditions:$municipality"
    return (
        stat.Panel()
        .title(title)
        .description(f"`ZRANGE {key} {start} {start} WITHSCORES`: {description}")
        .datasource(VALKEY)
        .with_target(Redis("zrange", key).index_range(start, start))
        .reduce_options(_single_value())
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common_models.BigValueColorMode.NONE)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .unit("none")
        .decimals(0)
    )


def _conditions() -> barchart.Panel:
    key = f"{PREFIX}:conditions"
    return (
        barchart.Panel()
        .title("Reports per weather condition")
        .description(
            f"`ZRANGE {key} 0 -1 WITHSCORES`: one field per weather; the reduce transformation "
            "turns them into rows so the bar chart has a category axis."
        )
        .datasource(VALKEY)
        .with_target(Redis("zrange", key).index_range(0, -1))
        .with_transformation(
            dashboard.DataTransformerConfig(
                id_val="reduce", options={"reducers": ["lastNotNull"], "mode": "seriesToRows"}
            )
        )
        .x_field("Field")
        .x_tick_label_max_length(X_LABEL_MAX)
        .show_value(common_models.VisibilityMode.AUTO)
        .legend(common.VizLegendOptions().show_legend(False))
        .unit("none")
        .decimals(0)
    )


def _identifier() -> text.Panel:
    return (
        text.Panel()
        .title("Identifier")
        .description("The dashboard variable `identifier` (the sketch's CARNET); set it in the variable bar.")
        .mode(text_models.TextMode.MARKDOWN)
        .content("# ${identifier}")
    )


def _municipality_name() -> text.Panel:
    return (
        text.Panel()
        .title("Municipality")
        .description("The municipality chosen in the variable `municipality`.")
        .mode(text_models.TextMode.MARKDOWN)
        .content("# ${municipality}")
    )


def _series() -> timeseries.Panel:
    key = f"{PREFIX}:series:$municipality"
    hidden = dashboard.DynamicConfigValue(
        id_val="custom.hideFrom", value={"viz": True, "legend": True, "tooltip": True}
    )
    return (
        timeseries.Panel()
        .title("Temperature and humidity in ${municipality}")
        .description(
            f"`XRANGE {key} <from>-0 <to>-0` over the dashboard's time range: one entry per "
            "closed bucket with the mean temperature and humidity (count is hidden)."
        )
        .datasource(VALKEY)
        .with_target(Redis("xrange", key))
        .unit("celsius")
        .decimals(1)
        .line_width(2)
        .fill_opacity(10)
        .span_nulls(True)
        .override_by_name(
            "humidity",
            [
                dashboard.DynamicConfigValue(id_val="unit", value="percent"),
                dashboard.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
        .override_by_name("count", [hidden])
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
    )


def _variables() -> list[builders.QueryVariable | builders.ConstantVariable | builders.TextBoxVariable]:
    chinautla = dashboard.VariableOption(selected=True, text=DEFAULT_MUNICIPALITY, value=DEFAULT_MUNICIPALITY)
    identifier = dashboard.VariableOption(selected=True, text=DEFAULT_IDENTIFIER, value=DEFAULT_IDENTIFIER)
    return [
        builders.ConstantVariable("prefix").label("Key prefix").value("weather"),
        builders.QueryVariable("municipality")
        .label("Municipality")
        .description("SMEMBERS <prefix>:municipalities")
        .datasource(VALKEY)
        .query(f"SMEMBERS {PREFIX}:municipalities")
        .refresh(dashboard.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .current(chinautla)
        .multi(False)
        .include_all(False),
        builders.TextBoxVariable("identifier")
        .label("Identifier")
        .description("Shown in the Identifier panel (the original sketch's CARNET).")
        .default_value(DEFAULT_IDENTIFIER)
        .current(identifier),
    ]


def build() -> dashboard.Dashboard:
    """Build the Weather dashboard."""
    board = (
        builders.Dashboard("Weather")
        .uid(UID)
        .description("Live weather aggregates from Valkey (redis-datasource), one query per panel.")
        .tags([TAG, "valkey"])
        .time("now-6h", "now")
        .refresh("10s")
        .timezone("browser")
        .readonly()
        .links(dashboard_links())
        .variables(_variables())  # type: ignore[arg-type]  # list invariance of the SDK's signature
    )
    panels = [
        # row 1
        place(_pie("Average humidity per municipality", f"{PREFIX}:avg:humidity", "percent"), 1, 0, 0, 8, 8),
        place(_extreme("Highest temperature", f"{PREFIX}:max", "temperature", "celsius", "red"), 2, 8, 0, 8, 4),
        place(_extreme("Highest humidity", f"{PREFIX}:max", "humidity", "percent", "blue"), 3, 16, 0, 8, 4),
        place(_extreme("Lowest temperature", f"{PREFIX}:min", "temperature", "celsius", "orange"), 4, 8, 4, 8, 4),
        place(_extreme("Lowest humidity", f"{PREFIX}:min", "humidity", "percent", "light-blue"), 5, 16, 4, 8, 4),
        # row 2
        place(_pie("Average temperature per municipality", f"{PREFIX}:avg:temperature", "celsius"), 6, 0, 8, 8, 8),
        place(_conditions(), 7, 8, 8, 16, 8),
    ]
    for panel in panels:
        board.with_panel(panel)
    board.with_row(row("Municipality: ${municipality}", 8, 16))
    section = [
        place(_identifier(), 9, 0, 17, 8, 4),
        place(_commonest("Most common weather", -1, "the highest count (ties: the last name)."), 10, 8, 17, 8, 4),
        place(_commonest("Least common weather", 0, "the lowest count (ties: the first name)."), 11, 16, 17, 8, 4),
        place(_municipality_name(), 12, 0, 21, 8, 8),
        place(_series(), 13, 8, 21, 16, 8),
    ]
    for panel in section:
        board.with_panel(panel)
    return board.build()
