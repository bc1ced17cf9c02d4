"""The API's documentation pages, served by mailvia itself: Swagger UI at `/docs` (and its
OAuth redirect page), ReDoc at `/redoc`, their scripts, styles and icon at `/docs/assets/`.

The assets come from the `fastapi-offline` package (Swagger UI and ReDoc's bundles, kept up
to date there), so the pages work with no network beyond this server and load nothing from a
CDN. Their security headers are added in `web/docs_headers.py`.
"""

from __future__ import annotations

from importlib.resources import files

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS = "/docs/assets"
OAUTH_REDIRECT = "/docs/oauth2-redirect"
# Swagger UI's validator badge would ask validator.swagger.io about the document: not here.
SWAGGER_PARAMETERS = {"validatorUrl": None}


def serve_docs(app: FastAPI) -> None:
    """Add `/docs`, its OAuth redirect, `/redoc` and their assets to `app` (made with
    docs_url=None and redoc_url=None)."""
    bundles = files(fastapi_offline) / "static"
    app.mount(ASSETS, StaticFiles(directory=str(bundles)), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title}: API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url=OAUTH_REDIRECT,
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    @app.get(OAUTH_REDIRECT, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title}: API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
