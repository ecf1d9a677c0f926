"""/docs and /redoc work offline: their pages name only same-origin URLs, and those answer."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

URL_PATTERNS = (r"""(?:src|href)=["']([^"']+)""", r"""\burl: *["']([^"']+)""", r"""spec-url=["']([^"']+)""")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_journeyd_itself(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert "cdn." not in html and "googleapis" not in html and "tiangolo.com" not in html
    urls = {url for pattern in URL_PATTERNS for url in re.findall(pattern, html)}
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "/openapi.json" in urls
    if page == "/docs":
        assert '"validatorUrl": null' in html  # Swagger UI would otherwise fetch a badge from its online validator
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = next(media for suffix, media in TYPES.items() if url.endswith(suffix))
        assert asset.headers["content-type"].startswith(kind), (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url  # a real bundle, not an empty stand-in


def test_the_docs_pages_stay_out_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(path.startswith(("/docs", "/redoc")) for path in paths)
    missing = client.get("/docs-assets/nothing-here.js")
    assert missing.status_code == 404 and missing.json()["code"] == 404  # apimart's envelope, like any unknown path
