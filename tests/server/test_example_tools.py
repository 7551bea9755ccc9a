"""examples/tools/shop.py, the module docs/integrate.md uses, as an operator would run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.support.sse import open_stream, types

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(("provider", "tool", "args", "content"), [
    ("anthropic", "lookup_order", {"order_id": "AB100001", "detail": "items"},
     '{"order_id":"AB100001","found":true,"items":[{"name":"Kettle, stainless steel","quantity":1},'
     '{"name":"Mug, stoneware","quantity":2}]}'),
    ("openai", "search_products", {"query": "tea", "limit": 1},
     '[{"sku":"TB-04","name":"Tea box, oak","price":"25.00 EUR"}]'),
    ("anthropic", "sales_report", {"month": "2026-11"}, "2026-11: 2 orders, 4 items"),  # in the thread pool
])
def test_the_shop_tools_answer_from_their_sqlite_file(start_sluice: Any, fresh: FakeUpstream, tmp_path: Path,
                                                      provider: str, tool: str, args: dict[str, Any],
                                                      content: str) -> None:
    db = tmp_path / "shop.sqlite3"
    server = start_sluice(SLUICE_TOOLS="examples.tools.shop", EXAMPLE_SHOP_DB=str(db))
    prompt = f"[fake tool={tool} args={json.dumps(args, separators=(',', ':'))} tokens=1]"
    events = open_stream(f"{server.url}/stream", params={"prompt": prompt, "provider": provider, "tools": tool},
                         timeout=30).rest()
    result = next(e.json for e in events if e.type == "tool_result")
    assert (result["content"], result["is_error"]) == (content, False)
    assert types(events)[-2:] == ["done", "[DONE]"] and db.exists()
    offered = {t.get("name") or t["function"]["name"] for t in fresh.requests[0].json["tools"]}
    assert offered == {tool}
