"""The docs page (/schema) renders every operation in a real browser with no network but loopback.

Debian's Chromium, headless, with a fresh profile, every background service off, a proxy on a
closed port for anything but 127.0.0.1 and a host resolver that finds no other name: what the
page needs must come from the service itself. The same browser and flags, given Litestar's
default page (assets from a CDN), render nothing: the harness does cut the network off.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from litestar import Litestar, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from tests.conftest import Api, free_port, require_binary, wait_until

ROOT = Path(__file__).resolve().parent.parent


def rendered_paths(url: str, profile: Path) -> set[str]:
    """The operation paths Swagger UI shows at `url` once the page has run (its DOM after 15 s of virtual time)."""
    chromium = require_binary("chromium")
    closed = free_port()  # nothing listens here: every request but loopback's goes nowhere
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--proxy-server=http://127.0.0.1:{closed}",
        "--proxy-bypass-list=127.0.0.1",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout  # noqa: S603
    return set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))


def test_the_docs_page_renders_every_operation_offline(api: Api, tmp_path: Path) -> None:
    """/schema, in headless Chromium cut off from all but loopback, shows each path of the OpenAPI document."""
    documented = set(httpx.get(api.url + "/schema/openapi.json", timeout=10).json()["paths"])
    assert rendered_paths(api.url + "/schema", tmp_path / "profile") == documented
    assert len(documented) == 8


def test_the_page_loads_only_the_services_own_pinned_swagger_ui(api: Api) -> None:
    """Every script, style and icon of /schema is the service's, under the Swagger UI version uv.lock pins."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (pinned,) = [p["version"] for p in lock["package"] if p["name"] == "flask-swagger-ui"]
    page = httpx.get(api.url + "/schema", timeout=10).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page)
    assert urls
    assert all(url.startswith(f"/schema/assets/swagger-ui-{pinned}/") for url in urls), urls
    for url in urls:
        asset = httpx.get(api.url + url, timeout=10)
        assert asset.status_code == 200, url
        assert "immutable" in asset.headers["cache-control"]


@contextmanager
def _serving(app: Litestar) -> Iterator[str]:
    """`app` on a loopback port, in a thread, for the block."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the CDN page's server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@get("/ping", sync_to_thread=False)
def ping() -> str:
    """An operation for the CDN page to show."""
    return "pong"


def test_a_page_that_loads_swagger_ui_from_a_cdn_renders_nothing_here(tmp_path: Path) -> None:
    """Litestar's default Swagger UI page (assets from jsDelivr) shows no operation under the same browser."""
    cdn = SwaggerRenderPlugin()
    assert cdn.js_url.startswith("https://")
    config = OpenAPIConfig(title="cdn", version="1", path="/schema", render_plugins=[cdn])
    with _serving(Litestar(route_handlers=[ping], openapi_config=config)) as url:
        assert set(httpx.get(url + "/schema/openapi.json", timeout=10).json()["paths"]) == {"/ping"}
        assert rendered_paths(url + "/schema", tmp_path / "profile") == set()


def test_only_the_files_of_the_ui_package_are_used() -> None:
    """Building the app imports neither flask_swagger_ui nor Flask: the package is a directory of files here."""
    probe = (
        "import sys; from weather_api.app import create_app; from weather_api.settings import Settings; "
        "create_app(Settings(telemetry=False)); print(sorted({'flask', 'flask_swagger_ui'} & set(sys.modules)))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)  # noqa: S603
    assert imported.stdout.strip() == "[]"
