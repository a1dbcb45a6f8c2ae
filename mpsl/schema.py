"""Reading a YAML mapping field by field, with one-line errors that name file and field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_ADDRESS = re.compile(r"^tcp://[A-Za-z0-9_.\-]+:(\d{1,5})$")


class TopologyError(ValueError):
    """A topology file is wrong: one line naming the file, the field, what was given and wanted."""

    def __init__(self, source: str, field_path: str, given: Any, expected: str) -> None:
        self.source, self.field, self.given, self.expected = source, field_path, given, expected
        shown = "missing" if given is MISSING else f"got {given!r}"
        super().__init__(f"{source}: field '{field_path}': {shown}, expected {expected}")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


class FieldReader:
    """Reads one mapping of the YAML file, remembering the dotted path for errors."""

    def __init__(self, source: str, data: Any, path: str) -> None:
        self.source, self.path = source, path
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise TopologyError(source, path or "<top>", data, "a mapping")
        self.data = data
        self.used: set[str] = set()

    def _field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, given: Any, expected: str) -> TopologyError:
        return TopologyError(self.source, self._field(key), given, expected)

    def raw(self, key: str, default: Any = MISSING) -> Any:
        self.used.add(key)
        value = self.data.get(key, MISSING)
        if value is MISSING:
            if default is MISSING:
                raise self.fail(key, MISSING, "a value")
            return default
        return value

    def sub(self, key: str, required: bool = False) -> FieldReader:
        value = self.raw(key, MISSING if required else None)
        return FieldReader(self.source, value, self._field(key))

    def text(self, key: str, default: Any = MISSING, choices: Sequence[str] | None = None) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "a non-empty string")
        if choices is not None and value not in choices:
            raise self.fail(key, value, "one of " + ", ".join(choices))
        return value

    def integer(self, key: str, default: Any = MISSING, minimum: int | None = None) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, value, "an integer" + _at_least(minimum))
        if minimum is not None and value < minimum:
            raise self.fail(key, value, "an integer" + _at_least(minimum))
        return value

    def number(self, key: str, default: Any = MISSING, positive: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        wanted = "a positive number" if positive else "a number >= 0"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, value, wanted)
        if value < 0 or (positive and value == 0) or value != value:
            raise self.fail(key, value, wanted)
        return float(value)

    def flag(self, key: str, default: Any = MISSING) -> Any:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false")
        return value

    def address(self, key: str, default: Any = MISSING) -> Any:
        value = self.raw(key, default)
        m = _ADDRESS.match(value) if isinstance(value, str) else None
        if m is None or not 0 < int(m.group(1)) < 65536:
            raise self.fail(key, value, "an address like tcp://127.0.0.1:5555")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used, key=str)
        if unknown:
            key = str(unknown[0])
            known = ", ".join(sorted(self.used)) or "none"
            raise self.fail(key, self.data[unknown[0]], f"no such field (known: {known})")


def _at_least(minimum: int | None) -> str:
    return "" if minimum is None else f" >= {minimum}"


def int_list(r: FieldReader, key: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    )
    if not ok or any(b <= a for a, b in zip(value, value[1:])):
        raise r.fail(key, value, f"a strictly increasing list of integers >= {minimum}")
    return tuple(value)




def relative_to(source: str, path: str | None) -> str | None:
    """A path given in a file, resolved against that file's folder."""
    if path is None or Path(path).is_absolute():
        return path
    return str(Path(source).parent / path)
