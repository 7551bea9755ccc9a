"""A shop's assistant tools over a small SQLite database: `SLUICE_TOOLS=examples.tools.shop`.

Plain functions, nothing imported from Sluice: the name is the tool's name, the docstring's first
paragraph what the model reads, the type hints the input schema (and the check of the model's
arguments). The database file (`EXAMPLE_SHOP_DB`, default in the temporary directory) is created
with a few rows on first use.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import gevent
from pydantic import BaseModel, Field

__all__ = ["lookup_order", "search_products", "sales_report"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, status TEXT NOT NULL, placed TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS order_items (order_id TEXT, sku TEXT, quantity INTEGER, PRIMARY KEY (order_id, sku));
INSERT OR IGNORE INTO products VALUES ('KT-01', 'Kettle, stainless steel', 3900), ('MG-02', 'Mug, stoneware', 1200),
    ('TP-03', 'Teapot, cast iron', 5400), ('TB-04', 'Tea box, oak', 2500);
INSERT OR IGNORE INTO orders VALUES ('AB100001', 'shipped', '2026-11-02'), ('AB100002', 'processing', '2026-11-28');
INSERT OR IGNORE INTO order_items VALUES ('AB100001', 'KT-01', 1), ('AB100001', 'MG-02', 2), ('AB100002', 'TP-03', 1);
"""


class Product(BaseModel):
    sku: str
    name: str
    price: Annotated[str, Field(description="e.g. 39.00 EUR")]


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    path = Path(os.environ.get("EXAMPLE_SHOP_DB") or Path(tempfile.gettempdir()) / "sluice-example-shop.sqlite3")
    conn = sqlite3.connect(path)
    try:
        with conn:  # one transaction: the tables and rows exist before any query
            conn.executescript(_SCHEMA)
        yield conn
    finally:
        conn.close()


def lookup_order(
    order_id: Annotated[str, Field(pattern=r"^[A-Z]{2}\d{6}$", description="The order number, e.g. AB100001")],
    detail: Literal["status", "items"] = "status",
) -> dict[str, object]:
    """Look up one of the customer's orders by its number: its status, or what is in it.

    sqlite3 is C code that gevent does not patch; a local file answers in microseconds. A database
    on the network needs a driver that yields to gevent (psycopg with a gevent wait callback,
    PyMySQL, redis-py...), or the thread pool as in `sales_report`.
    """
    with _db() as conn:
        row = conn.execute("SELECT status, placed FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            return {"order_id": order_id, "found": False}
        if detail == "status":
            return {"order_id": order_id, "found": True, "status": row[0], "placed": row[1]}
        items = conn.execute("SELECT p.name, i.quantity FROM order_items i JOIN products p ON p.sku = i.sku "
                             "WHERE i.order_id = ? ORDER BY p.name", (order_id,)).fetchall()
        return {"order_id": order_id, "found": True, "items": [{"name": n, "quantity": q} for n, q in items]}


def search_products(
    query: Annotated[str, Field(min_length=2, max_length=50, description="Words of the product's name")],
    limit: Annotated[int, Field(ge=1, le=10)] = 5,
) -> list[Product]:
    """Find products of the shop by name."""
    with _db() as conn:
        rows = conn.execute("SELECT sku, name, price_cents FROM products WHERE name LIKE ? ORDER BY sku LIMIT ?",
                            (f"%{query}%", limit)).fetchall()
    return [Product(sku=sku, name=name, price=f"{cents / 100:.2f} EUR") for sku, name, cents in rows]


def sales_report(month: Annotated[str, Field(pattern=r"^\d{4}-\d{2}$", description="e.g. 2026-11")]) -> str:
    """How many orders were placed in a month, and how many items they held."""
    # Imagine a heavy query: it runs in gevent's thread pool, so the worker's other streams go
    # on meanwhile (a function that holds the CPU in the event loop would stop them all).
    return str(gevent.get_hub().threadpool.apply(_report, (month,)))


def _report(month: str) -> str:
    with _db() as conn:  # a connection of the pool's thread: sqlite3 objects stay in their thread
        orders, items = conn.execute(
            "SELECT COUNT(DISTINCT o.id), COALESCE(SUM(i.quantity), 0) FROM orders o "
            "LEFT JOIN order_items i ON i.order_id = o.id WHERE substr(o.placed, 1, 7) = ?", (month,)).fetchone()
    return f"{month}: {orders} orders, {items} items"
