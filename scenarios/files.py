"""Scenario files: YAML that declares scenarios with the built-ins' fields; one line naming the file and field for
bad input.

    scenarios:
      - name: my-chat
        description: Premium users chat with streaming, 10 requests each
        duration: 30s                      # optional; without it every stream needs `requests`
        streams:
          - tiers: [premium]               # tier names or roles (every-tier, lowest-limit, ...); or users: [...]
            pattern: steady:2/s            # steady:N/s | bursty:NxDURATION | poisson:N/s | none
            requests: 10                   # per round; rounds: 1, round_gap: 0s
            endpoint: chat                 # completions | chat
            stream: true
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from chargeback.manifests import SAFE_LOADER
from chargeback.plan import parse_window

from .model import CREDENTIALS, ENDPOINTS, Scenario, Stream
from .patterns import parse_pattern

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
STREAM_FIELDS = ("users", "tiers", "pick", "credential", "per_identity", "pattern", "requests", "rounds", "round_gap",
                 "endpoint", "stream", "model", "prompt", "max_tokens")
SCENARIO_FIELDS = ("name", "description", "duration", "streams")


class ScenarioFileError(ValueError):
    """Bad input in a scenario file; one line naming the file and the field."""


def load_scenarios(path: Path, source: str | None = None) -> list[Scenario]:
    """The scenarios a file declares."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except OSError as exc:
        raise ScenarioFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ScenarioFileError(f"{path}:{mark.line + 1 if mark else '?'}: YAML error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioFileError(f"{path}: YAML error: {exc}") from None
    reader = _Reader(str(path))
    items = data.get("scenarios") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise reader.error("scenarios", "expected a list of scenarios (see `chargeback scenarios --help`)")
    scenarios = [reader.scenario(item, f"scenarios[{i}]", source or str(path)) for i, item in enumerate(items)]
    names = [s.name for s in scenarios]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise reader.error(f"scenarios[{i}].name", f"{name!r} is declared twice")
    return scenarios


class _Reader:
    def __init__(self, path: str):
        self.path = path

    def error(self, field: str, problem: str) -> ScenarioFileError:
        return ScenarioFileError(f"{self.path}: {field}: {problem}")

    def fields(self, item: Any, at: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise self.error(at, f"expected a mapping with {', '.join(allowed)}")
        for key in item:
            if key not in allowed:
                raise self.error(f"{at}.{key}", f"unknown field; fields: {', '.join(allowed)}")
        return item

    def scenario(self, item: Any, at: str, source: str) -> Scenario:
        item = self.fields(item, at, SCENARIO_FIELDS)
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise self.error(f"{at}.name", f"expected a name of letters, digits, '.', '_' or '-', got {name!r}")
        description = item.get("description", "")
        if not isinstance(description, str):
            raise self.error(f"{at}.description", f"expected text, got {description!r}")
        duration = self.seconds(item["duration"], f"{at}.duration", minimum=0.001) if "duration" in item else None
        streams = item.get("streams")
        if not isinstance(streams, list) or not streams:
            raise self.error(f"{at}.streams", "expected a list of streams")
        parsed = tuple(self.stream(s, f"{at}.streams[{i}]", duration) for i, s in enumerate(streams))
        return Scenario(name, description, parsed, duration, source)

    def stream(self, item: Any, at: str, duration: float | None) -> Stream:
        item = self.fields(item, at, STREAM_FIELDS)
        values: dict[str, Any] = {}
        for key in ("users", "tiers"):
            if key in item:
                names = [item[key]] if isinstance(item[key], str) else item[key]
                if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                    raise self.error(f"{at}.{key}", f"expected a list of names, got {item[key]!r}")
                values[key] = tuple(names)
        if "pick" in item:
            values["pick"] = tuple(self.number(p, f"{at}.pick", 0) for p in (
                item["pick"] if isinstance(item["pick"], list) else [item["pick"]]))
        for key, choices in (("credential", CREDENTIALS), ("endpoint", tuple(ENDPOINTS))):
            if key in item:
                if item[key] not in choices:
                    raise self.error(f"{at}.{key}", f"expected one of {', '.join(choices)}, got {item[key]!r}")
                values[key] = item[key]
        for key, minimum in (("per_identity", 1), ("requests", 1), ("rounds", 1), ("max_tokens", 1)):
            if key in item:
                values[key] = self.number(item[key], f"{at}.{key}", minimum)
        if "round_gap" in item:
            values["round_gap"] = self.seconds(item["round_gap"], f"{at}.round_gap", minimum=0.0)
        if "pattern" in item:
            try:
                values["pattern"] = parse_pattern(item["pattern"])
            except ValueError as exc:
                raise self.error(f"{at}.pattern", str(exc)) from None
        if "stream" in item:
            if not isinstance(item["stream"], bool):
                raise self.error(f"{at}.stream", f"expected true or false, got {item['stream']!r}")
            values["stream"] = item["stream"]
        for key in ("model", "prompt"):
            if key in item:
                if not isinstance(item[key], str) or not item[key]:
                    raise self.error(f"{at}.{key}", f"expected text, got {item[key]!r}")
                values[key] = item[key]
        if values.get("credential", "valid") == "valid" and not values.get("users") and not values.get("tiers"):
            raise self.error(at, "a stream of valid keys needs users or tiers")
        if "requests" not in values and duration is None:
            raise self.error(f"{at}.requests", "needed when the scenario has no duration (else it never ends)")
        return Stream(**values)

    def number(self, value: Any, at: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(at, f"expected a whole number >= {minimum}, got {value!r}")
        return value

    def seconds(self, value: Any, at: str, minimum: float) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            try:
                seconds = parse_window(str(value))
            except ValueError as exc:
                raise self.error(at, str(exc)) from None
        if seconds < minimum:
            raise self.error(at, f"expected at least {minimum:g} s, got {value!r}")
        return seconds
