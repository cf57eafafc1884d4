"""Dashboards of weather-api as code, and the checks that keep them honest.

``python -m weather_dashboards generate`` writes ../grafana/dashboards/*.json from the builders in
``weather`` and ``service`` (grafana-foundation-sdk, Grafana 11 types); ``check`` verifies the
committed JSON against the generator and the rules in ``checks``.
"""
