"""`python -m weather_api` is the `weather-api` command."""

from weather_api.cli import main

main()
