"""Operator tools (SLUICE_TOOLS): schemas, argument checks, results, and start-up errors."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator

import pytest

from app.config import ConfigError, Settings
from app.toolbox import ToolLoadError, load, toolbox_for
from tests.support.own_tools import LOOKUP_ORDER_SCHEMA

OWN = "tests.support.own_tools"


@pytest.fixture(scope="module")
def box():  # type: ignore[no-untyped-def]
    return load([OWN], timeout=0.5)


def test_a_module_gives_every_function_of_its_all_after_the_builtins(box) -> None:  # type: ignore[no-untyped-def]
    assert box.names() == ("get_time", "calculate", "lookup_order", "add_item", "explode", "pause",
                           "read_line", "meet", "shipment")
    assert load([f"{OWN}:explode"]).names() == ("get_time", "calculate", "explode")


def test_schema_from_hints_with_field_descriptions_literals_and_defaults(box) -> None:  # type: ignore[no-untyped-def]
    spec = box.spec("lookup_order")
    assert spec.description == "Look up one of the customer's orders by its number."
    assert spec.input_schema == LOOKUP_ORDER_SCHEMA


def test_nested_models_are_defs(box) -> None:  # type: ignore[no-untyped-def]
    schema = box.spec("add_item").input_schema
    assert schema["properties"]["item"] == {"$ref": "#/$defs/Item"}
    assert schema["$defs"]["Item"]["properties"]["sku"] == {"type": "string", "description": "Stock keeping unit"}
    assert schema["required"] == ["item"]


def test_results_strings_as_they_are_anything_else_as_json(box) -> None:  # type: ignore[no-untyped-def]
    assert box.run("lookup_order", {"order_id": "AB123456"}) == ('{"order_id":"AB123456","status":"shipped"}', False)
    assert box.run("add_item", {"item": {"sku": "ab"}}) == ('{"sku":"AB","quantity":2}', False)
    assert json.loads(box.run("shipment", {"order_id": "x"})[0]) == {"order_id": "x", "carrier": "ACME"}
    assert box.run("pause", {"seconds": 0}) == ("slept 0", False)


def test_invalid_arguments_are_a_short_error_result(box) -> None:  # type: ignore[no-untyped-def]
    content, is_error = box.run("lookup_order", {"order_id": "12", "detail": "price", "extra": 1})
    assert is_error
    assert content.startswith("invalid arguments for lookup_order: order_id: String should match pattern")
    assert "detail: Input should be 'status' or 'items'" in content and "extra: Unexpected keyword argument" in content
    assert box.run("add_item", {})[0] == "invalid arguments for add_item: item: Missing required argument"


def test_an_exception_is_an_error_result_and_its_detail_stays_in_the_log(box, caplog) -> None:  # type: ignore[no-untyped-def]
    content, is_error = box.run("explode", {"reason": "x"})
    assert (content, is_error) == ("the tool explode failed (RuntimeError)", True)
    assert "hunter2" in caplog.text and "Traceback" in caplog.text


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    mod = types.ModuleType("sluice_test_bad_tools")
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def _fails(entries: str, module: types.ModuleType | None = None, **funcs: object) -> str:
    for name, func in funcs.items():
        setattr(module, name, func)
    with pytest.raises(ToolLoadError) as err:
        toolbox_for(Settings.from_env({"SLUICE_TOOLS": entries}))
    return str(err.value)


def test_start_up_fails_naming_the_module_and_function(module: types.ModuleType) -> None:
    import socket

    def calculate(expression: str) -> str:
        """Clashes with the built-in one."""
        return expression

    def takes_a_socket(conn: socket.socket) -> str:
        """No schema for a socket."""
        return ""

    def untyped(x):  # type: ignore[no-untyped-def]
        """No hint."""

    def undocumented(x: int) -> int:
        return x

    def lookup_order(order_id: str) -> str:
        """Clashes with the other module's."""
        return order_id

    name = module.__name__
    assert "cannot import module 'no_such_module_xyz'" in _fails("no_such_module_xyz:f")
    assert f"{name}:missing: module {name!r} has no 'missing'" in _fails(f"{name}:missing", module)
    assert f"{name}:calculate: the tool name 'calculate' is already a built-in tool" in _fails(
        f"{name}:calculate", module, calculate=calculate)
    assert f"{name}:lookup_order: the tool name 'lookup_order' is already taken by {OWN}:lookup_order" in _fails(
        f"{OWN}:lookup_order,{name}:lookup_order", module, lookup_order=lookup_order)
    assert f"{name}:takes_a_socket: its type hints cannot become a JSON schema" in _fails(
        f"{name}:takes_a_socket", module, takes_a_socket=takes_a_socket)
    assert f"{name}:untyped: parameter 'x' has no type hint" in _fails(f"{name}:untyped", module, untyped=untyped)
    assert f"{name}:undocumented has no docstring" in _fails(f"{name}:undocumented", module, undocumented=undocumented)
    assert f"module {name!r} has no __all__" in _fails(name, module)
    assert "SLUICE_TOOL_TIMEOUT must be a number" in _fails_env(SLUICE_TOOL_TIMEOUT="soon")


def _fails_env(**env: str) -> str:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    return str(err.value)


def test_settings_carry_the_tools_and_their_timeout() -> None:
    settings = Settings.from_env({"SLUICE_TOOLS": f"{OWN}:meet", "SLUICE_TOOL_TIMEOUT": "2.5"})
    assert "meet" in toolbox_for(settings) and toolbox_for(settings).timeout == 2.5
    assert toolbox_for(Settings.from_env({})).names() == ("get_time", "calculate")


def test_a_value_that_cannot_be_json_is_an_error_result(module: types.ModuleType) -> None:
    def weird() -> object:
        """Returns what JSON cannot hold."""
        return object()

    module.weird = weird  # type: ignore[attr-defined]
    box = load([f"{module.__name__}:weird"])
    assert box.run("weird", {}) == ("the tool weird failed (PydanticSerializationError)", True)
    assert box.spec("weird").input_schema == {"type": "object", "additionalProperties": False, "properties": {}}
