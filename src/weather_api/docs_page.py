"""The docs page (/schema): Swagger UI, pinned, served by the service itself; no CDN, works offline.

What comes from Litestar, what is ours, and why:

- Litestar's render plugins write the page; by default they load their JavaScript, CSS and
  favicon from a CDN (jsDelivr), Scalar's as `@scalar/api-reference@latest`: a script that
  changes under the service on every visit, and a blank page without internet.
- Here the assets are Swagger UI's own distribution files (`dist/`) as the PyPI package
  `flask-swagger-ui` ships them, pinned in uv.lock (its version is the Swagger UI version), and
  served by Litestar's static files router under a versioned path. Only the files are used:
  the package is found with `importlib.util.find_spec`, which does not import it (nor Flask).
- Swagger UI, not Scalar: every PyPI package that ships Scalar's standalone bundle depends on a
  web framework (flask-openapi, star-openapi: Starlette and pydantic), and Scalar's bundle
  loads its fonts from Scalar's CDN by default. Swagger UI 5 renders OpenAPI 3.1 and loads
  nothing from elsewhere; Litestar's plugin embeds the document in the page.

Test: tests/test_docs_page.py renders /schema in headless Chromium with the network cut off.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

PACKAGE = "flask_swagger_ui"


class MissingAssetsError(RuntimeError):
    """The package with Swagger UI's files is not installed."""


def swagger_ui_dist() -> Path:
    """Swagger UI's distribution directory, inside the installed package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = f"{PACKAGE} is not installed: the docs page has no Swagger UI files"
        raise MissingAssetsError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def swagger_ui_version(dist: Path) -> str:
    """The Swagger UI version the distribution names (its VERSION file says `v5.34.0`)."""
    return (dist / "VERSION").read_text().strip().removeprefix("v")


def assets_path(dist: Path) -> str:
    """Where the service serves these files: versioned, so that a browser may cache them for good."""
    return f"/schema/assets/swagger-ui-{swagger_ui_version(dist)}"


def assets_router(dist: Path) -> Router:
    """Litestar's static files router for the distribution directory (outside the document)."""
    year = 365 * 24 * 3600
    return create_static_files_router(
        path=assets_path(dist),
        directories=[dist],
        name="swagger-ui",
        cache_control=CacheControlHeader(public=True, max_age=year, immutable=True),
        include_in_schema=False,
    )


def render_plugin(dist: Path) -> SwaggerRenderPlugin:
    """Swagger UI's page at /schema and /schema/swagger, loading only the service's own files."""
    base = assets_path(dist)
    return SwaggerRenderPlugin(
        js_url=f"{base}/swagger-ui-bundle.js",
        css_url=f"{base}/swagger-ui.css",
        standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>",
    )
