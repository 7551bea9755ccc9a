"""Every tool a request may name: the built-in ones and the operator's own (`SLUICE_TOOLS`).

An operator's tool is a plain function that imports nothing from Sluice. Its name is the tool's
name, the first paragraph of its docstring the description, and its type hints (through
pydantic) the input schema and the validation of the model's arguments:

    load("shop.tools:lookup_order,shop.search")  ->  Toolbox (built-ins + operator's tools)
    Toolbox.run(name, arguments)                  ->  (content, is_error); never raises Exception

A tool runs in the generation's greenlet, so gevent-patched I/O yields to other streams, and a
cancel (a kill of that greenlet) stops it where it waits.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent
from pydantic import TypeAdapter, ValidationError

from app.config import Settings
from app.providers.base import ToolSpec
from app.tools import BUILTIN_TOOLS, Tool, ToolFailed

log = logging.getLogger("sluice.tools")

DEFAULT_TIMEOUT = 30.0
MAX_ERROR_CHARS = 500  # an invalid-arguments message, as the model reads it


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class ToolLoadError(ValueError):
    """A `SLUICE_TOOLS` entry that cannot become a tool; the message names the module and function."""


class _Raised(Exception):
    """The operator's function itself raised (not pydantic's validation of its arguments)."""


@dataclass(frozen=True)
class Toolbox:
    """The tools of this server, by name: built-in ones first, then the operator's in order."""

    tools: Mapping[str, Tool]
    timeout: float = DEFAULT_TIMEOUT

    def names(self) -> tuple[str, ...]:
        """Every tool name a request or a profile may use (built-in and configured)."""
        return tuple(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def spec(self, name: str) -> ToolSpec:
        """What the model is told about the tool `name` (KeyError for an unknown one)."""
        return self.tools[name].spec

    def run(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Run one call: (content, is_error). Failures, bad arguments and the timeout are results.

        Only a kill of the calling greenlet (a cancel, a deadline: BaseExceptions) goes through.
        """
        tool = self.tools.get(name)
        if tool is None:
            return f"unknown tool {name!r}", True
        # A BaseException of our own: a tool's `except Exception` cannot swallow it.
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            return tool.run(arguments), False
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            log.warning("tool %s did not answer within %g s", name, self.timeout)
            return f"the tool {name} did not answer within {self.timeout:g} s", True
        except ToolFailed as exc:
            return str(exc), True
        except Exception as exc:
            # The traceback is for the operator: the model and the page get a short message.
            cause = exc.__cause__ if isinstance(exc, _Raised) and exc.__cause__ is not None else exc
            log.error("tool %s failed", name, exc_info=cause)
            return f"the tool {name} failed ({type(cause).__name__})", True
        finally:
            timer.close()


BUILTIN = Toolbox(BUILTIN_TOOLS)


def toolbox_for(settings: Settings) -> Toolbox:
    """Every tool `settings` offer (built-in + SLUICE_TOOLS): what a request or profile may name.

    Imported once per process (create_app calls this at worker start, so a bad entry stops it).
    """
    return _loaded(settings.tools, settings.tool_timeout)


@functools.cache
def _loaded(entries: tuple[str, ...], timeout: float) -> Toolbox:
    return load(entries, timeout)


def load(entries: Iterable[str], timeout: float = DEFAULT_TIMEOUT) -> Toolbox:
    """The built-in tools plus every function `entries` names (`module:function` or `module`)."""
    tools = dict(BUILTIN_TOOLS)
    origin = {name: "a built-in tool" for name in tools}
    for entry in entries:
        for where, func in _functions(entry):
            name = func.__name__
            if name in tools:
                raise ToolLoadError(f"SLUICE_TOOLS: {where}: the tool name {name!r} is already {origin[name]}")
            tools[name] = tool_from_function(func, where)
            origin[name] = f"taken by {where}"
    return Toolbox(tools, timeout)


def _functions(entry: str) -> list[tuple[str, Callable[..., Any]]]:
    """(`module:function`, function) for one entry; a bare module gives its `__all__`."""
    module_name, _, attr = entry.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not module_name or (":" in entry and not attr):
        raise ToolLoadError(f"SLUICE_TOOLS: {entry!r} is not `module:function` or `module`")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raised while it ran
        raise ToolLoadError(f"SLUICE_TOOLS: cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    if attr:
        names = [attr]
    else:
        names = list(getattr(module, "__all__", None) or ())
        if not names:
            raise ToolLoadError(f"SLUICE_TOOLS: module {module_name!r} has no __all__ naming its tools")
    found: list[tuple[str, Callable[..., Any]]] = []
    for name in names:
        where = f"{module_name}:{name}"
        func = getattr(module, name, None)
        if func is None:
            raise ToolLoadError(f"SLUICE_TOOLS: {where}: module {module_name!r} has no {name!r}")
        if not inspect.isfunction(func):
            raise ToolLoadError(f"SLUICE_TOOLS: {where} is not a function")
        found.append((where, func))
    return found


def tool_from_function(func: Callable[..., Any], where: str) -> Tool:
    """A tool from a plain function: schema and validation from its type hints (pydantic)."""
    if inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func):
        raise ToolLoadError(f"SLUICE_TOOLS: {where}: a tool is a plain function (async and generators are not)")
    description = _description(func)
    if not description:
        raise ToolLoadError(f"SLUICE_TOOLS: {where} has no docstring: its first paragraph is what the model reads")
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolLoadError(f"SLUICE_TOOLS: {where}: parameter {param.name!r} must be a plain named parameter")
        if param.annotation is param.empty:
            raise ToolLoadError(f"SLUICE_TOOLS: {where}: parameter {param.name!r} has no type hint")

    @functools.wraps(func)
    def called(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            # Trap: a pydantic ValidationError raised inside the tool is the tool's failure, not
            # the model's bad arguments; this wrapper is how the two are told apart.
            raise _Raised() from exc

    try:
        adapter: TypeAdapter[Any] = TypeAdapter(called)  # type: ignore[arg-type]  # a callable: its arguments
        schema = _tidy(adapter.json_schema())
    except Exception as exc:  # PydanticSchemaGenerationError, PydanticInvalidForJsonSchema, NameError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolLoadError(f"SLUICE_TOOLS: {where}: its type hints cannot become a JSON schema: {first}") from exc
    name = func.__name__

    def run(arguments: dict[str, Any]) -> str:
        try:
            value = adapter.validate_python(arguments)
        except ValidationError as exc:
            raise ToolFailed(_invalid(name, exc)) from None
        return _as_text(value)

    return Tool(ToolSpec(name, description, schema), run)


def _description(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def _invalid(name: str, exc: ValidationError) -> str:
    """pydantic's errors as one short line: `order_id: String should match pattern ...; ...`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    text = f"invalid arguments for {name}: " + "; ".join(parts)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _as_text(value: Any) -> str:
    """A tool's return value as the model reads it: a string as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return _ANY.dump_json(value).decode()  # pydantic models, dataclasses, dates... too


def _tidy(schema: Any, *, names: bool = False) -> Any:
    """pydantic's JSON schema without its generated `title`s (noise the model pays for in tokens).

    `names` marks a mapping of names to schemas (`properties`, `$defs`): a property may be
    called `title`, and stays.
    """
    if isinstance(schema, list):
        return [_tidy(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if names:
        return {key: _tidy(value) for key, value in schema.items()}
    return {key: _tidy(value, names=key in ("properties", "$defs", "patternProperties"))
            for key, value in schema.items() if key != "title"}
