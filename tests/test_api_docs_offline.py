"""The API's docs pages work on an intranet (issue 20): /docs and /redoc load every script,
style and icon from the API itself, never from a public CDN, where FastAPI's defaults do."""

from __future__ import annotations

import re

import pytest

from api.app import create_app
from runtime.settings import load_settings
from tests.api_support import TestClient


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_outside(page):
    # No lifespan (no `with`): the pages need neither the database nor the broker.
    client = TestClient(create_app(load_settings(None)))
    html = client.get(page)
    assert html.status_code == 200
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    assert any(a.endswith(".js") for a in assets), html.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        fetched = client.get(asset)
        assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
    assert "/openapi.json" in html.text
    outside = re.findall(r"https?://[^\s\"'<>]+", re.sub(r"<!--.*?-->", "", html.text, flags=re.S))
    assert not outside, outside
