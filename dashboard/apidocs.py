"""The API's own documentation, `/docs` (Swagger UI) and `/redoc` (ReDoc), with no internet.

FastAPI's default pages load Swagger UI and ReDoc (and a favicon, and Google fonts) from
CDNs and start Swagger UI with an inline script, so they are blank offline and would need
`unsafe-inline` in the CSP. These pages load the same libraries from web/node_modules
(`swagger-ui-dist`, `redoc`, installed from npm like Leaflet) and start them from our own
file, web/apidocs.js. The app is built with `docs_url=None, redoc_url=None`.

Each page sends its own CSP: scripts only from this origin, never inline. /redoc also allows
inline styles (ReDoc inserts `<style>` elements) and a `blob:` worker (its search index).
ReDoc's menu shows Redocly's logo from their CDN: the CSP refuses it, so it is never fetched.
Pinned to ReDoc 2.x: 3.x depends on an analytics package.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter()

FAVICON = "/static/vendor/swagger-ui/favicon-32x32.png"

SWAGGER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


# ReDoc's styled-components and its bundled scrollbar CSS insert <style> elements, the
# scrollbar one before any of our code runs (so a nonce cannot reach it): styles may be inline
# here, scripts still may not. The page shows no data of ours but the OpenAPI schema.
REDOC_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        f'<link rel="icon" type="image/png" href="{FAVICON}">\n'
        '<link rel="stylesheet" href="/static/app/apidocs.css">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def _openapi_url(request: Request) -> str:
    url: str | None = request.app.openapi_url
    return escape(url or "/openapi.json", quote=True)


@router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for this API, assets served from web/node_modules/swagger-ui-dist."""
    html = _page(
        f"{request.app.title} — Swagger UI",
        '<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{_openapi_url(request)}"></div>\n'
        '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>\n'
        '<script src="/static/app/apidocs.js"></script>\n',
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": SWAGGER_CSP})


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc for this API, served from web/node_modules/redoc (no Google fonts)."""
    html = _page(
        f"{request.app.title} — ReDoc",
        "",
        f'<div id="redoc" data-openapi-url="{_openapi_url(request)}"></div>\n'
        '<script src="/static/vendor/redoc/redoc.standalone.js"></script>\n'
        '<script src="/static/app/apidocs.js"></script>\n',
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": REDOC_CSP})
