"""The three expression languages in Kuadrant manifests: CEL (with Kuadrant's `split`), Rego, Authorino selectors."""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import cel
import regopy

# Well-known attribute roots other than `auth` that change per request (Kuadrant's well-known attributes).
REQUEST_ROOTS = frozenset({"request", "source", "destination", "connection", "metadata", "filter_state"})
BODY_FUNCTIONS = frozenset({"requestBodyJSON", "responseBodyJSON"})


class ExpressionError(ValueError):
    """An expression that does not compile; the message is one line."""


def _split(text: str, separator: str) -> list[str]:
    """Kuadrant's CEL strings extension `split`, as `"a,b".split(",")`."""
    return text.split(separator)


class CelExpression:
    """A compiled CEL expression evaluated against Kuadrant's attributes (`auth.*`, `request.*`)."""

    def __init__(self, source: str):
        self.source = source.strip()
        try:
            self._program = cel.compile(self.source)
        except (ValueError, RuntimeError) as exc:
            raise ExpressionError(f"CEL syntax error in `{self.source}`: {_first_line(exc)}") from None
        self.per_request = bool(REQUEST_ROOTS & set(self._program.variables())
                                or BODY_FUNCTIONS & set(self._program.functions()))

    def evaluate(self, attributes: dict[str, Any]) -> Any:
        """The value; raises ExpressionError when an attribute it reads is absent or a type is wrong."""
        context = cel.Context()
        context.add_function("split", _split)
        for name, value in attributes.items():
            context.add_variable(name, value)
        try:
            return self._program.execute(context)
        except KeyError as exc:
            raise ExpressionError(f"`{self.source}`: attribute {exc} is absent") from None
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ExpressionError(f"`{self.source}`: {_first_line(exc)}") from None

    def __repr__(self) -> str:
        return f"CelExpression({self.source!r})"


class RegoRule:
    """An Authorino inline OPA rule: wrapped in a package of its own and queried for `allow`."""

    PACKAGE = "authorino_inline"

    def __init__(self, source: str):
        self.source = source
        self._interpreter = regopy.Interpreter()  # one per rule, its module added once; each query sets its input
        with _stdout_silenced():  # rego-cpp prints parse errors on stdout; the exception carries them
            try:
                self._interpreter.add_module(self.PACKAGE, f"package {self.PACKAGE}\n\n{source}")
            except regopy.RegoError as exc:
                raise _rego_error(exc) from None
            self.allows({})  # compile now, so a syntax error is reported at load time

    def allows(self, authorization_json: dict[str, Any]) -> bool:
        """True iff `allow` is true for this input (undefined counts as false, as in Authorino)."""
        interpreter = self._interpreter
        try:
            interpreter.set_input_term(json.dumps(authorization_json))
            output = interpreter.query(f"data.{self.PACKAGE}.allow")
        except regopy.RegoError as exc:
            raise _rego_error(exc) from None
        if not output.ok():
            raise ExpressionError(f"Rego error: {_first_line(str(output))}")
        text = str(output)
        return text != "undefined" and json.loads(text).get("expressions") == [True]


def _rego_error(exc: Exception) -> ExpressionError:
    """rego-cpp's error messages, once each, in one line."""
    messages = re.findall(r"errormsg \d+:([^)]*)\)", str(exc))
    return ExpressionError(f"Rego error: {'; '.join(dict.fromkeys(messages)) or _first_line(exc)}")


_SELECTOR_SPLIT = re.compile(r"(?<!\\)\.")


def resolve_selector(selector: str, document: dict[str, Any]) -> Any:
    """Resolve an Authorino JSON selector such as `auth.identity.metadata.annotations.kuadrant\\.io/groups`."""
    if "@" in selector or "#" in selector or "*" in selector:
        raise ExpressionError(f"selector `{selector}`: modifiers and wildcards are not supported")
    value: Any = document
    for part in _SELECTOR_SPLIT.split(selector):
        key = part.replace("\\.", ".")
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the duration (output written by C++ libraries)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _first_line(exc: object) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
