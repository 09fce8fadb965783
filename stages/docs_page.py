"""GET /docs: the API reference with a "try it out" playground, rendered by Swagger UI from the
node's own /openapi.json.

The renderer is the static Swagger UI bundle the `swagger-ui-bundle-v2` package installs (pinned
in pyproject.toml): the page and its assets come from this node, with no CDN and no network at
run time. Asset URLs carry the bundle's version, so they are cached as immutable; the page itself
is revalidated. The playground's server is the page's own origin (the document's relative server).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from quart import Quart, Response
from swagger_ui_bundle import swagger_ui_path

BUNDLE_DIR = Path(str(swagger_ui_path))
BUNDLE_VERSION = BUNDLE_DIR.name.removeprefix("swagger-ui-")  # e.g. "5.31.0"
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                    "favicon-32x32.png", "favicon-16x16.png"})  # fmt: skip
ASSET_PREFIX = f"/docs/swagger-ui-{BUNDLE_VERSION}"
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Foglamp ingest API</title>
  <link rel="stylesheet" href="{prefix}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{prefix}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{prefix}/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{prefix}/swagger-ui-bundle.js"></script>
  <script src="{prefix}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "BaseLayout",
      deepLinking: true,
      docExpansion: "list",
      tryItOutEnabled: true,
      displayRequestDuration: true,
      showExtensions: true,
      validatorUrl: null
    }});
  </script>
</body>
</html>
"""


def docs_html() -> str:
    return PAGE.format(prefix=ASSET_PREFIX)


def asset(name: str) -> tuple[bytes, str] | None:
    """One file of the bundle and its content type; None for anything not in `ASSETS`."""
    if name not in ASSETS:
        return None
    suffix = Path(name).suffix
    content_type = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return (BUNDLE_DIR / name).read_bytes(), content_type


def install_docs(app: Quart) -> None:
    """Add GET /docs and its assets to the node's Quart app."""
    page = docs_html().encode()
    cache: dict[str, tuple[bytes, str]] = {}

    @app.get("/docs")
    async def docs() -> Response:
        return Response(page, status=200, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})  # fmt: skip

    @app.get(f"{ASSET_PREFIX}/<name>")
    async def docs_asset(name: str) -> Response:
        if name not in cache:
            found = asset(name)
            if found is None:
                return Response(b'{"error":"not_found"}', status=404, content_type="application/json")
            cache[name] = found
        body, content_type = cache[name]
        return Response(body, status=200, content_type=content_type,
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})  # fmt: skip
