"""The API documents itself without the internet: /docs and /redoc load only assets the API
serves (a city's operations network has no route to a public CDN)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.main import create_app
from citysense.servers import LocalServers
from common.influx import InfluxConfig
from tests.support.api import api_settings, running

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""")


async def test_docs_pages_load_only_what_the_api_serves(
    servers: LocalServers, influx: InfluxConfig, tmp_path: Path
) -> None:
    async with running(create_app(api_settings(servers, influx, tmp_path))) as api:
        for page in ("/docs", "/redoc"):
            html = (await api.get(page)).text
            assert "cdn." not in html and "fonts.googleapis" not in html, page
            urls = [a or b for a, b in ASSET.findall(html)]
            assert urls, page
            for url in urls:
                assert not url.startswith(("http:", "https:", "//")), (page, url)
                response = await api.get(url)
                assert response.status_code == 200, (page, url)
                assert len(response.content) > 100, (page, url)
        script = await api.get("/docs-assets/swagger-ui-bundle.js")
        assert "javascript" in script.headers["content-type"]
