"""Operator tools for the tests (`SLUICE_TOOLS=tests.support.own_tools`): plain functions, no Sluice import."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field

__all__ = ["lookup_order", "add_item", "explode", "pause", "read_line", "meet", "shipment"]


# What the model must be given for `lookup_order` (the tests' expectation, on every provider).
LOOKUP_ORDER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string", "pattern": r"^[A-Z]{2}\d{6}$", "description": "e.g. AB123456"},
        "detail": {"enum": ["status", "items"], "type": "string", "default": "status"},
    },
    "required": ["order_id"],
}


class Item(BaseModel):
    sku: Annotated[str, Field(description="Stock keeping unit")]
    quantity: int = 1


@dataclass
class Shipment:
    order_id: str
    carrier: str


def lookup_order(order_id: Annotated[str, Field(pattern=r"^[A-Z]{2}\d{6}$", description="e.g. AB123456")],
                 detail: Literal["status", "items"] = "status") -> dict[str, str]:
    """Look up one of the customer's orders by its number.

    This second paragraph is for the programmer, not the model.
    """
    return {"order_id": order_id, detail: "shipped" if detail == "status" else "2 items"}


def add_item(item: Item, note: str | None = None) -> Item:
    """Add an item to the basket."""
    return Item(sku=item.sku.upper(), quantity=item.quantity + 1)


def shipment(order_id: str) -> Shipment:
    """Where an order's parcel is."""
    return Shipment(order_id, "ACME")


def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"database password hunter2 rejected ({reason})")


def pause(seconds: float) -> str:
    """Wait (time.sleep, gevent-patched in the worker), then answer."""
    time.sleep(seconds)
    return f"slept {seconds:g}"


def read_line(port: int) -> str:
    """Read one line from a TCP server on 127.0.0.1."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        return conn.makefile("r").readline().strip()


_arrived: dict[str, int] = {}


def meet(key: str) -> str:
    """Answer once a second call with the same key is running too (proof that calls run side by side)."""
    _arrived[key] = _arrived.get(key, 0) + 1
    deadline = time.monotonic() + 10
    while _arrived[key] < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the other call never came")
        time.sleep(0.01)
    return f"met {key}"
