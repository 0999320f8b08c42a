"""Printing results: tables for people, JSON with stable keys for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join("%s=%s" % (k, _cell(v)) for k, v in sorted(value.items()))
    return str(value)


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO | None = None
) -> None:
    """A plain-text table of ``columns`` of each row."""
    out = out or sys.stdout
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(line, file=out)
    print(
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |", file=out
    )
    print(line, file=out)
    for row in cells:
        print(
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |", file=out
        )
    print(line, file=out)


def record(item: dict[str, Any], out: TextIO | None = None) -> None:
    """One record as a two-column Field/Value table."""
    out = out or sys.stdout
    table([{"Field": k, "Value": v} for k, v in item.items()], ["Field", "Value"], out)


def emit(
    result: Any, fmt: str, columns: Sequence[str] | None = None, out: TextIO | None = None
) -> None:
    """Print ``result`` (a list of rows, one record, a string or None) in ``fmt``."""
    out = out or sys.stdout
    if fmt == "json":
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
        return
    if result is None:
        return
    if isinstance(result, str):
        print(result, file=out)
    elif isinstance(result, list):
        table(result, columns or (sorted(result[0]) if result else ["(none)"]), out)
    else:
        record(result, out)


class Progress:
    """A one-line status that rewrites itself on a terminal and stays silent when piped."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.enabled = self.out.isatty()
        self._shown = False

    def update(self, text: str) -> None:
        if self.enabled:
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            self.out.write("\r\033[K")
            self.out.flush()
            self._shown = False
