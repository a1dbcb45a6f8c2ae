"""The one output handler of every command: results as tables or as one JSON object.

A command builds its result as JSON-ready data and hands it over with a renderer; in `table`
format the renderer turns that same data into rich tables on stdout, in `json` format the data
is printed as one JSON object on stdout and nothing else goes there. So table and JSON never
drift apart. Notes, warnings and (in `json` format) progress go to stderr; an error is one line
on stderr, never wrapped.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.console import Console, RenderableType

FORMATS = ("table", "json")
Renderer = Callable[[Mapping[str, Any]], Iterable[RenderableType]]


def one_line(text: object) -> str:
    """A message as one line: a multi-line one becomes its first and its last line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return type(text).__name__ if isinstance(text, BaseException) else "unknown error"
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def print_error(err: object) -> None:
    """`error: ...` on stderr, one line (plain print: no console width, no wrapping)."""
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf or nan
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Output:
    """Where a command's output goes, for `--format table|json`."""

    def __init__(self, fmt: str = "table") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
        self.format = fmt
        self.stdout = Console(highlight=False)
        self.stderr = Console(stderr=True, highlight=False)
        self.warnings: list[str] = []

    @property
    def json(self) -> bool:
        return self.format == "json"

    @property
    def console(self) -> Console:
        """For what a person watches (progress, a header, an intermediate table): stdout in
        table format, stderr in json format."""
        return self.stderr if self.json else self.stdout

    def info(self, text: str) -> None:
        """A line for the person watching (see `console`), never wrapped."""
        self.console.print(text, markup=False, soft_wrap=True)

    def note(self, text: str) -> None:
        """A note on stderr, whatever the format (e.g. `profiling ...`)."""
        print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        """`warning: ...` on stderr, one line; kept for the JSON result's `warnings`."""
        self.warnings.append(text)
        print(f"warning: {one_line(text)}", file=sys.stderr, flush=True)

    def result(self, data: Mapping[str, Any], render: Renderer) -> None:
        """The command's result: one JSON object, or `render(data)` as tables."""
        if self.json:
            sys.stdout.write(json.dumps(_jsonable(data)) + "\n")
            sys.stdout.flush()
            return
        for item in render(data):
            if isinstance(item, str):
                self.stdout.print(item, markup=False, soft_wrap=True)
            else:
                self.stdout.print(item)
