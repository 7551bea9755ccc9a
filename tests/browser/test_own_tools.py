"""The chat page with the operator's own tools (SLUICE_TOOLS), in Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.timeout(90)


def test_the_page_offers_configured_tools_and_shows_their_results(start_sluice: Any, fresh: FakeUpstream,
                                                                  page: Any, tmp_path: Path) -> None:
    server = start_sluice(SLUICE_TOOLS="examples.tools.shop", EXAMPLE_SHOP_DB=str(tmp_path / "shop.sqlite3"))
    page.goto(server.url + "/")
    offered = page.locator('input[name="tools"]').evaluate_all("boxes => boxes.map(b => b.value)")
    assert offered == ["calculate", "get_time", "lookup_order", "sales_report", "search_products"]
    assert page.get_attribute('label:has(input[value="lookup_order"])', "title") == (
        "Look up one of the customer's orders by its number: its status, or what is in it.")
    page.get_by_label("lookup_order").check()
    page.fill("#prompt", 'where is AB100001? [fake tool=lookup_order args={"order_id":"AB100001"} tokens=1]')
    page.click("#send")
    page.wait_for_selector('#status[data-state="done"]', timeout=15000)
    shown = page.text_content("#tools") or ""
    assert "lookup_order" in shown and "AB100001" in shown and "shipped" in shown
    assert [t["name"] for t in fresh.requests[0].json["tools"]] == ["lookup_order"]
    assert not page.js_errors
